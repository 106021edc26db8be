//! Kernel outputs as MCP content, in output order: text, images (downscaled for the agent
//! when very large; the notebook keeps the original), Plotly and HTML as embedded
//! resources, errors with their traceback (ANSI codes stripped), and text cut at a limit
//! with a note saying where the whole output is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rmcp::model::{ContentBlock, ResourceContents};
use serde_json::{Map, Value};

use crate::jupyter::Output;

/// Images larger than this on either side are scaled down for the agent.
pub const MAX_IMAGE_SIDE: u32 = 1568;

/// How outputs are turned into content.
#[derive(Clone, Debug)]
pub struct RenderOptions {
    /// Bytes of text returned before the rest is cut.
    pub text_limit: usize,
    /// Where the whole text output was saved, when it is over the limit.
    pub full_output_path: Option<String>,
}

/// The content blocks for `outputs`, and whether one of them is an error.
pub fn render(outputs: &[Output], options: &RenderOptions) -> (Vec<ContentBlock>, bool) {
    let mut r = Renderer {
        blocks: vec![],
        pending_text: String::new(),
        text_used: 0,
        truncated: false,
        options,
    };
    let mut is_error = false;
    for output in outputs {
        match output {
            Output::Stream { text, .. } => r.text(text),
            Output::Result { data, .. } | Output::Display { data, .. } => r.bundle(data),
            Output::Error {
                ename,
                evalue,
                traceback,
            } => {
                is_error = true;
                r.text(&error_text(ename, evalue, traceback));
            }
        }
    }
    r.flush_text();
    (r.blocks, is_error)
}

/// `ename: evalue` then the traceback, without terminal colour codes.
pub fn error_text(ename: &str, evalue: &str, traceback: &[String]) -> String {
    let mut s = format!("{ename}: {evalue}\n");
    for line in traceback {
        s.push_str(&strip_ansi(line));
        s.push('\n');
    }
    s
}

/// The total size of the text an execution printed (what the limit applies to).
pub fn text_size(outputs: &[Output]) -> usize {
    outputs.iter().map(|o| full_text(o).len()).sum()
}

/// Every text an output carries, as the agent would read it in full.
pub fn full_text(output: &Output) -> String {
    match output {
        Output::Stream { text, .. } => text.clone(),
        Output::Result { data, .. } | Output::Display { data, .. } => {
            if data.keys().any(|k| k.starts_with("image/")) {
                String::new()
            } else {
                text_of(data.get("text/plain")).unwrap_or_default()
            }
        }
        Output::Error {
            ename,
            evalue,
            traceback,
        } => error_text(ename, evalue, traceback),
    }
}

struct Renderer<'a> {
    blocks: Vec<ContentBlock>,
    pending_text: String,
    text_used: usize,
    truncated: bool,
    options: &'a RenderOptions,
}

impl Renderer<'_> {
    /// Adds text, merged with adjacent text, cut at the limit.
    fn text(&mut self, text: &str) {
        if self.truncated || text.is_empty() {
            return;
        }
        let room = self.options.text_limit.saturating_sub(self.text_used);
        if text.len() <= room {
            self.pending_text.push_str(text);
            self.text_used += text.len();
            return;
        }
        let mut cut = room;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        self.pending_text.push_str(&text[..cut]);
        self.text_used += cut;
        self.truncated = true;
        let whole = match &self.options.full_output_path {
            Some(path) => format!(
                "the whole output is in `{path}`: read it with read_file (offset/length page through it)"
            ),
            None => "the rest was not kept".to_owned(),
        };
        self.pending_text.push_str(&format!(
            "\n[output truncated after {} bytes; {whole}]\n",
            self.options.text_limit
        ));
    }

    fn flush_text(&mut self) {
        if !self.pending_text.is_empty() {
            self.blocks
                .push(ContentBlock::text(std::mem::take(&mut self.pending_text)));
        }
    }

    fn push(&mut self, block: ContentBlock) {
        self.flush_text();
        self.blocks.push(block);
    }

    /// A MIME bundle: the richest form an agent can use.
    fn bundle(&mut self, data: &Map<String, Value>) {
        for mime in ["image/png", "image/jpeg"] {
            if let Some(b64) = text_of(data.get(mime)) {
                let (b64, mime) = agent_image(&b64, mime);
                self.push(ContentBlock::image(b64, mime));
                return;
            }
        }
        if let Some(plotly) = data.get("application/vnd.plotly.v1+json") {
            self.push(ContentBlock::resource(
                ResourceContents::text(plotly.to_string(), "slurmlab://output/plotly.json")
                    .with_mime_type("application/vnd.plotly.v1+json"),
            ));
            return;
        }
        if let Some(plain) = text_of(data.get("text/plain")) {
            let mut plain = plain;
            if !plain.ends_with('\n') {
                plain.push('\n');
            }
            self.text(&plain);
            return;
        }
        for mime in ["text/html", "text/markdown", "application/json"] {
            if let Some(v) = data.get(mime) {
                let text = text_of(Some(v)).unwrap_or_else(|| v.to_string());
                self.push(ContentBlock::resource(
                    ResourceContents::text(text, format!("slurmlab://output/{mime}"))
                        .with_mime_type(mime),
                ));
                return;
            }
        }
        let kinds: Vec<&str> = data.keys().map(String::as_str).collect();
        self.text(&format!("[output of type {}]\n", kinds.join(", ")));
    }
}

/// nbformat text: a string or a list of lines.
fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(lines) => Some(lines.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// Largest image (either side, and pixels in memory) the gateway decodes to scale it: a
/// few kilobytes of PNG can claim gigapixels (a decompression bomb).
const MAX_DECODE_SIDE: u32 = 16_384;
const MAX_DECODE_BYTES: u64 = 256 * 1024 * 1024;

/// The image as the agent gets it: unchanged unless a side exceeds [`MAX_IMAGE_SIDE`],
/// then scaled to fit and re-encoded as PNG. Only the header is read to learn the size;
/// the pixels are decoded only to scale, and only within [`MAX_DECODE_SIDE`] and
/// [`MAX_DECODE_BYTES`]. Undecodable or oversized data is passed on as it is.
pub fn agent_image(b64: &str, mime: &str) -> (String, String) {
    let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    let Ok(bytes) = B64.decode(&compact) else {
        return (compact, mime.to_owned());
    };
    let reader = || image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format();
    let Some((width, height)) = reader().ok().and_then(|r| r.into_dimensions().ok()) else {
        return (compact, mime.to_owned());
    };
    if width <= MAX_IMAGE_SIDE && height <= MAX_IMAGE_SIDE {
        return (compact, mime.to_owned());
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODE_SIDE);
    limits.max_image_height = Some(MAX_DECODE_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    let decoded = reader().ok().and_then(|mut r| {
        r.limits(limits);
        r.decode().ok()
    });
    let Some(img) = decoded else {
        return (compact, mime.to_owned());
    };
    let small = img.resize(
        MAX_IMAGE_SIDE,
        MAX_IMAGE_SIDE,
        image::imageops::FilterType::Triangle,
    );
    let mut out = std::io::Cursor::new(Vec::new());
    match small.write_to(&mut out, image::ImageFormat::Png) {
        Ok(()) => (B64.encode(out.into_inner()), "image/png".to_owned()),
        Err(_) => (compact, mime.to_owned()),
    }
}

/// Removes ANSI escape sequences (CSI `ESC [ ... final` and two-byte `ESC x`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            // Parameters and intermediates, then one final byte in @..~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(limit: usize) -> RenderOptions {
        RenderOptions {
            text_limit: limit,
            full_output_path: Some("nb_outputs/ex-1.txt".into()),
        }
    }

    fn bundle(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn png(w: u32, h: u32) -> String {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 10, 10]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        B64.encode(out.into_inner())
    }

    #[test]
    fn outputs_keep_their_order_and_kinds() {
        let outputs = vec![
            Output::Stream {
                name: "stdout".into(),
                text: "hi\n".into(),
            },
            Output::Display {
                data: bundle(json!({"image/png": png(4, 3), "text/plain": "<Figure>"})),
                metadata: Map::new(),
            },
            Output::Result {
                execution_count: Some(1),
                data: bundle(json!({"text/plain": "2"})),
                metadata: Map::new(),
            },
            Output::Display {
                data: bundle(json!({"text/html": "<b>x</b>"})),
                metadata: Map::new(),
            },
            Output::Display {
                data: bundle(json!({
                    "application/vnd.plotly.v1+json": {"data": [{"y": [1, 2]}]},
                    "text/html": "<div>plotly</div>"
                })),
                metadata: Map::new(),
            },
        ];
        let (blocks, is_error) = render(&outputs, &opts(1000));
        assert!(!is_error);
        assert_eq!(blocks.len(), 5);
        let plotly = blocks[4]
            .as_resource()
            .expect("Plotly as an embedded resource");
        assert!(format!("{plotly:?}").contains("application/vnd.plotly.v1+json"));
        assert_eq!(blocks[0].as_text().unwrap().text, "hi\n");
        assert_eq!(blocks[1].as_image().unwrap().mime_type, "image/png");
        assert_eq!(blocks[2].as_text().unwrap().text, "2\n");
        assert!(blocks[3].as_resource().is_some());
    }

    #[test]
    fn errors_are_flagged_with_a_clean_traceback() {
        let outputs = vec![Output::Error {
            ename: "ValueError".into(),
            evalue: "bad".into(),
            traceback: vec!["\u{1b}[0;31mValueError\u{1b}[0m: bad".into()],
        }];
        let (blocks, is_error) = render(&outputs, &opts(1000));
        assert!(is_error);
        assert_eq!(
            blocks[0].as_text().unwrap().text,
            "ValueError: bad\nValueError: bad\n"
        );
    }

    #[test]
    fn long_text_is_cut_with_a_pointer_to_the_whole() {
        let outputs = vec![Output::Stream {
            name: "stdout".into(),
            text: "é".repeat(100),
        }];
        let (blocks, _) = render(&outputs, &opts(51));
        let text = &blocks[0].as_text().unwrap().text;
        assert!(text.starts_with(&"é".repeat(25)));
        assert!(text.contains("nb_outputs/ex-1.txt"), "{text}");
        assert_eq!(text_size(&outputs), 200);
    }

    #[test]
    fn huge_images_are_scaled_for_the_agent_only() {
        let big = png(3000, 1000);
        let (small, mime) = agent_image(&big, "image/png");
        assert_eq!(mime, "image/png");
        let img = image::load_from_memory(&B64.decode(small).unwrap()).unwrap();
        assert_eq!((img.width(), img.height()), (MAX_IMAGE_SIDE, 523));
        let modest = png(800, 600);
        assert_eq!(agent_image(&modest, "image/png").0, modest);
    }

    #[test]
    fn a_decompression_bomb_is_not_decoded() {
        // A valid PNG wider than the decoder may go (a few hundred bytes on the wire):
        // without the limits it would be decoded and scaled, with them it passes as is.
        let wide = image::GrayImage::new(MAX_DECODE_SIDE + 1, 2);
        let mut out = std::io::Cursor::new(Vec::new());
        wide.write_to(&mut out, image::ImageFormat::Png).unwrap();
        let b64 = B64.encode(out.into_inner());
        let (data, mime) = agent_image(&b64, "image/png");
        assert_eq!(
            (data, mime.as_str()),
            (b64, "image/png"),
            "passed on unchanged"
        );
        // Just under the limit it is scaled as any big image is.
        let fits = image::GrayImage::new(MAX_DECODE_SIDE, 2);
        let mut out = std::io::Cursor::new(Vec::new());
        fits.write_to(&mut out, image::ImageFormat::Png).unwrap();
        let b64 = B64.encode(out.into_inner());
        assert_ne!(agent_image(&b64, "image/png").0, b64, "scaled");
    }

    #[test]
    fn ansi_codes_are_removed() {
        assert_eq!(strip_ansi("\u{1b}[1;32mok\u{1b}[0m done"), "ok done");
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
