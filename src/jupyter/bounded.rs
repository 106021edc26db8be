//! Outputs kept within a memory budget while a run goes. A cell printing as fast as it
//! can for hours must not take the process (or the notebook) with it: each stream keeps
//! its first `stream_head` and last `stream_tail` bytes, with a marker where the middle
//! was left out (saying where the whole is, when someone keeps it), and rich outputs
//! (figures) stop being kept once they total `rich_bytes`.

/// How much of a run's output is kept in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputBudget {
    pub stream_head: usize,
    pub stream_tail: usize,
    pub rich_bytes: usize,
    /// Where the whole output is kept, for the marker (e.g. a file path).
    pub whole_at: Option<String>,
}

impl OutputBudget {
    /// Everything is kept (short internal runs).
    pub fn unbounded() -> Self {
        OutputBudget {
            stream_head: usize::MAX / 4,
            stream_tail: usize::MAX / 4,
            rich_bytes: usize::MAX,
            whole_at: None,
        }
    }
}

impl Default for OutputBudget {
    /// 256 KiB head and tail per stream, 64 MiB of figures.
    fn default() -> Self {
        OutputBudget {
            stream_head: 256 * 1024,
            stream_tail: 256 * 1024,
            rich_bytes: 64 * 1024 * 1024,
            whole_at: None,
        }
    }
}

/// Backpressure from whoever consumes the outputs (e.g. a spill to a file): a run's
/// channel stops reading the kernel's messages while more than `limit` bytes are held,
/// so a fast printer is slowed to the consumer's pace instead of filling memory.
#[derive(Debug)]
pub struct Pace {
    held: std::sync::atomic::AtomicUsize,
    freed: tokio::sync::Notify,
    limit: usize,
}

impl Pace {
    pub fn new(limit: usize) -> Self {
        Pace {
            held: Default::default(),
            freed: tokio::sync::Notify::new(),
            limit,
        }
    }

    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn hold(&self, bytes: usize) {
        self.held
            .fetch_add(bytes, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn release(&self, bytes: usize) {
        let _ = self.held.fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |h| Some(h.saturating_sub(bytes)),
        );
        self.freed.notify_waiters();
    }

    /// Resolves once no more than `limit` bytes are held.
    pub async fn below(&self) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.held() <= self.limit {
                return;
            }
            freed.await;
        }
    }
}

/// One stream whose middle was left out: its text is head + marker + tail.
#[derive(Clone, Debug)]
struct Cut {
    index: usize,
    head_end: usize,
    marker_len: usize,
    skipped: u64,
}

/// The bookkeeping of one run's budget (pure; unit-tested).
#[derive(Debug)]
pub struct Bounded {
    budget: OutputBudget,
    cuts: Vec<Cut>,
    rich_used: usize,
    /// Rich outputs not kept.
    pub rich_dropped: usize,
}

impl Bounded {
    pub fn new(budget: OutputBudget) -> Self {
        Bounded {
            budget,
            cuts: vec![],
            rich_used: 0,
            rich_dropped: 0,
        }
    }

    /// Forgets every cut (`clear_output` emptied the outputs).
    pub fn clear(&mut self) {
        self.cuts.clear();
    }

    /// Whether a rich output of `bytes` is kept; counts it either way.
    pub fn admit_rich(&mut self, bytes: usize) -> bool {
        match self.rich_used.checked_add(bytes) {
            Some(total) if total <= self.budget.rich_bytes => {
                self.rich_used = total;
                true
            }
            _ => {
                self.rich_dropped += 1;
                false
            }
        }
    }

    /// The note that stands for a rich output that was not kept.
    pub fn rich_note(&self) -> String {
        format!(
            "[a display output was left out: this run's figures passed {} MiB{}]\n",
            self.budget.rich_bytes / (1024 * 1024),
            self.whole_note()
        )
    }

    fn whole_note(&self) -> String {
        self.budget
            .whole_at
            .as_ref()
            .map(|p| format!("; the whole text output is in {p}"))
            .unwrap_or_default()
    }

    fn marker(&self, skipped: u64) -> String {
        format!(
            "\n[… {skipped} bytes left out here{} …]\n",
            self.whole_note()
        )
    }

    /// After `text` (the stream at `index`) grew: cuts its middle when it is over the
    /// budget. Returns whether the text was rewritten (not just appended to). Cuts happen
    /// when the kept tail reaches twice its size, so the copying is amortised.
    pub fn after_append(&mut self, index: usize, text: &mut String) -> bool {
        let (head, tail) = (self.budget.stream_head, self.budget.stream_tail);
        let pos = self.cuts.iter().position(|c| c.index == index);
        let (head_end, tail_start, skipped) = match pos.map(|p| self.cuts[p].clone()) {
            None => {
                if text.len() <= head.saturating_add(tail.saturating_mul(2)) {
                    return false;
                }
                let head_end = floor_boundary(text, head);
                let tail_start = ceil_boundary(text, text.len() - tail);
                (head_end, tail_start, (tail_start - head_end) as u64)
            }
            Some(cut) => {
                let tail_from = cut.head_end + cut.marker_len;
                let kept_tail = text.len() - tail_from;
                if kept_tail <= tail.saturating_mul(2) {
                    return false;
                }
                let tail_start = ceil_boundary(text, text.len() - tail);
                let more = (tail_start - tail_from) as u64;
                (cut.head_end, tail_start, cut.skipped + more)
            }
        };
        let marker = self.marker(skipped);
        let mut rebuilt =
            String::with_capacity(head_end + marker.len() + (text.len() - tail_start));
        rebuilt.push_str(&text[..head_end]);
        rebuilt.push_str(&marker);
        rebuilt.push_str(&text[tail_start..]);
        *text = rebuilt;
        let cut = Cut {
            index,
            head_end,
            marker_len: marker.len(),
            skipped,
        };
        match pos {
            Some(p) => self.cuts[p] = cut,
            None => self.cuts.push(cut),
        }
        true
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(whole_at: Option<&str>) -> OutputBudget {
        OutputBudget {
            stream_head: 10,
            stream_tail: 10,
            rich_bytes: 100,
            whole_at: whole_at.map(str::to_owned),
        }
    }

    #[test]
    fn a_long_stream_keeps_its_head_and_tail_and_counts_the_middle() {
        let mut b = Bounded::new(small(Some("out/ex-1.txt")));
        let mut text = String::new();
        let mut whole = String::new();
        for i in 0..1000 {
            let line = format!("line {i}\n");
            whole.push_str(&line);
            text.push_str(&line);
            b.after_append(0, &mut text);
        }
        assert!(text.starts_with(&whole[..10]), "{text}");
        assert!(text.ends_with("line 999\n"), "{text}");
        let kept = text.len();
        assert!(kept < 200, "{kept}: {text}");
        let skipped: u64 = text
            .split("[… ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let tail_len = text.len() - text.rfind("…]\n").unwrap() - "…]\n".len();
        assert_eq!(skipped as usize + 10 + tail_len, whole.len());
        assert!(text.contains("the whole text output is in out/ex-1.txt"));
    }

    #[test]
    fn short_streams_are_untouched_and_cuts_respect_utf8() {
        let mut b = Bounded::new(small(None));
        let mut text = "short".to_owned();
        assert!(!b.after_append(0, &mut text));
        let mut wide = "é".repeat(40);
        assert!(b.after_append(1, &mut wide));
        assert!(wide.starts_with("ééééé\n[… "), "{wide}");
        assert!(wide.ends_with("ééééé"), "{wide}");
    }

    #[test]
    fn figures_stop_being_kept_past_their_budget() {
        let mut b = Bounded::new(small(None));
        assert!(b.admit_rich(60));
        assert!(!b.admit_rich(60));
        assert!(b.admit_rich(40));
        assert_eq!(b.rich_dropped, 1);
        assert!(b.rich_note().contains("left out"));
    }
}
