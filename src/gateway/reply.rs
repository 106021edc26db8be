//! Every tool reply fits a bound common MCP clients accept. The official Python SDK
//! refuses a server-sent event over 1,048,576 bytes, so a cell that draws 30 figures (or
//! a big JSON result, sent as text and again as `structuredContent`) would reach the
//! agent as nothing at all. A reply over the bound is made to fit, in this order: the
//! JSON sent twice is sent once (`structuredContent`, with a short text pointing at it),
//! then the largest images are left out with a note, then the largest texts are cut,
//! each with a note that says where the whole is.

use rmcp::model::{CallToolResult, ContentBlock};

/// The default bound on one reply's JSON: under 1 MiB with room for the JSON-RPC
/// envelope and the SSE framing.
pub const DEFAULT_REPLY_LIMIT: usize = 1_000_000;

/// Bytes of `result` as JSON (what the reply carries, less a constant envelope).
pub fn size(result: &CallToolResult) -> usize {
    serde_json::to_vec(result).map_or(usize::MAX, |v| v.len())
}

/// `result`, made to fit in `limit` bytes (pure; unit-tested). The whole reply is
/// serialised once; each change then adjusts the size by the blocks it swaps.
pub fn fit(mut result: CallToolResult, limit: usize) -> CallToolResult {
    let mut total = size(&result);
    if total <= limit {
        return result;
    }
    if let Some(structured) = &result.structured_content {
        let json = structured.to_string();
        let bytes = json.len();
        for i in 0..result.content.len() {
            if result.content[i].as_text().is_some_and(|t| t.text == json) {
                let note = ContentBlock::text(format!(
                    "[the result ({bytes} bytes of JSON) is in structuredContent; it is sent \
                     once to keep the reply under {limit} bytes]"
                ));
                swap(&mut result, &mut total, i, note);
            }
        }
    }
    while total > limit {
        let Some((i, bytes)) = largest(&result.content, |c| c.as_image().map(|img| img.data.len()))
        else {
            break;
        };
        let mime = result.content[i]
            .as_image()
            .map(|img| img.mime_type.clone())
            .unwrap_or_default();
        let note = ContentBlock::text(format!(
            "[{mime} image of {} KiB left out to keep the reply under {limit} bytes; the \
             notebook keeps every output (read_cell, or read_file for a file)]",
            bytes * 3 / 4 / 1024
        ));
        swap(&mut result, &mut total, i, note);
    }
    while total > limit {
        let over = total - limit;
        let Some((i, bytes)) = largest(&result.content, |c| c.as_text().map(|t| t.text.len()))
        else {
            break;
        };
        let note = format!(
            "\n[cut: {bytes} bytes did not fit the reply bound of {limit}; page through it \
             (offset/limit) or read it from the notebook]"
        );
        let keep = bytes.saturating_sub(over + note.len() + 64);
        if keep == 0 {
            swap(
                &mut result,
                &mut total,
                i,
                ContentBlock::text(note.trim_start()),
            );
            if total > limit {
                break;
            }
            continue;
        }
        if let Some(text) = result.content[i].as_text() {
            let mut cut = keep.min(text.text.len());
            while !text.text.is_char_boundary(cut) {
                cut -= 1;
            }
            let shortened = ContentBlock::text(format!("{}{note}", &text.text[..cut]));
            swap(&mut result, &mut total, i, shortened);
        }
    }
    if total > limit {
        // Only structured content is left too big: say so rather than send what no
        // client will read.
        return CallToolResult::error(vec![ContentBlock::text(format!(
            "the reply would be {total} bytes, over the gateway's bound of {limit}: ask for \
             less (a page with offset/limit, or a brief listing)"
        ))]);
    }
    result
}

/// Replaces block `i`, keeping `total` (the reply's size) in step.
fn swap(result: &mut CallToolResult, total: &mut usize, i: usize, block: ContentBlock) {
    let old = std::mem::replace(&mut result.content[i], block);
    *total = total.saturating_sub(block_size(&old)) + block_size(&result.content[i]);
}

fn block_size(block: &ContentBlock) -> usize {
    serde_json::to_vec(block).map_or(usize::MAX / 2, |v| v.len())
}

/// Index and size of the largest block `measure` counts.
fn largest(
    blocks: &[ContentBlock],
    measure: impl Fn(&ContentBlock) -> Option<usize>,
) -> Option<(usize, usize)> {
    blocks
        .iter()
        .enumerate()
        .filter_map(|(i, b)| measure(b).map(|n| (i, n)))
        .max_by_key(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn image(kib: usize) -> ContentBlock {
        ContentBlock::image("A".repeat(kib * 1024), "image/png")
    }

    #[test]
    fn a_small_reply_is_untouched() {
        let r = CallToolResult::success(vec![ContentBlock::text("2"), image(4)]);
        assert_eq!(fit(r.clone(), 100_000), r);
    }

    #[test]
    fn json_sent_twice_is_sent_once_first() {
        let big = json!({"cells": "x".repeat(6000)});
        let r = fit(CallToolResult::structured(big.clone()), 8000);
        assert_eq!(r.structured_content, Some(big));
        let text = &r.content[0].as_text().unwrap().text;
        assert!(text.contains("structuredContent"), "{text}");
        assert!(size(&r) <= 8000);
    }

    #[test]
    fn the_largest_images_go_first_and_text_stays() {
        let blocks = vec![
            ContentBlock::text("figure 1"),
            image(300),
            image(500),
            image(200),
            ContentBlock::text("done"),
        ];
        let r = fit(CallToolResult::success(blocks), 700 * 1024);
        assert!(size(&r) <= 700 * 1024);
        assert!(r.content[2].as_text().unwrap().text.contains("left out"));
        assert!(r.content[1].as_image().is_some() && r.content[3].as_image().is_some());
        assert_eq!(r.content[4].as_text().unwrap().text, "done");
    }

    #[test]
    fn the_tracked_size_is_the_serialised_size() {
        let blocks = vec![
            image(300),
            ContentBlock::text("a\"b\n".repeat(50_000)),
            image(200),
        ];
        let mut result = CallToolResult::success(blocks);
        let mut total = size(&result);
        swap(&mut result, &mut total, 0, ContentBlock::text("note"));
        swap(&mut result, &mut total, 1, ContentBlock::text("é\t"));
        assert_eq!(total, size(&result));
    }

    #[test]
    fn text_is_cut_on_a_char_boundary_with_a_note() {
        let r = fit(
            CallToolResult::success(vec![ContentBlock::text("é".repeat(10_000))]),
            5_000,
        );
        let text = &r.content[0].as_text().unwrap().text;
        assert!(size(&r) <= 5_000, "{}", size(&r));
        assert!(text.starts_with('é') && text.contains("[cut: 20000 bytes"));
        assert_ne!(r.is_error, Some(true));
    }

    #[test]
    fn structured_content_that_cannot_fit_is_an_error_that_says_so() {
        let r = fit(
            CallToolResult::structured(json!({"x": "y".repeat(10_000)})),
            2_000,
        );
        assert_eq!(r.is_error, Some(true));
        assert!(
            r.content[0]
                .as_text()
                .unwrap()
                .text
                .contains("ask for less")
        );
    }
}
