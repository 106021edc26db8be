//! `read_file` and `upload_file` over the contents API: paging through long text, images
//! as image content, and an upload size limit.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rmcp::model::{CallToolResult, ContentBlock};

use super::GatewayError;
use crate::jupyter::ContentModel;

/// Largest image file read_file shows (it is read whole to be shown).
pub const MAX_IMAGE_FILE: u64 = 20 * 1024 * 1024;

/// Refuses a directory (metadata from the contents API).
pub fn check_file(model: &ContentModel) -> Result<(), GatewayError> {
    if model.kind == "directory" {
        return Err(GatewayError::Invalid(format!(
            "{} is a directory: use list_files",
            model.path
        )));
    }
    Ok(())
}

/// An image file (its model with base64 content) as image content.
pub fn image(model: &ContentModel, mime: &str) -> CallToolResult {
    let text = model.content.as_str().unwrap_or_default();
    CallToolResult::success(vec![image_block(text, mime)])
}

/// One page of a text file: `bytes` were read from byte `offset` of a file of `total`
/// bytes (up to 3 more than `limit`, so a character cut at the end can be finished). The
/// page starts and ends on character boundaries; a page that is not UTF-8 or holds NUL
/// bytes is reported as binary (pure; unit-tested).
pub fn text_page(
    path: &str,
    bytes: &[u8],
    offset: u64,
    limit: usize,
    total: u64,
) -> CallToolResult {
    // A page that starts inside a character skips its continuation bytes.
    let skip = bytes
        .iter()
        .take(3)
        .take_while(|b| (**b & 0xC0) == 0x80)
        .count();
    let rest = bytes.get(skip..).unwrap_or_default();
    let mut take = rest.len().min(limit);
    let text = loop {
        let page = rest.get(..take).unwrap_or_default();
        // NUL bytes are valid UTF-8 but no text file has them.
        if page.contains(&0) {
            break None;
        }
        match std::str::from_utf8(page) {
            Ok(t) => break Some(t),
            // Cut inside a character at the end: back off to its start.
            Err(e) if e.error_len().is_none() && take > e.valid_up_to() => take = e.valid_up_to(),
            Err(_) => break None,
        }
    };
    let Some(text) = text else {
        return CallToolResult::success(vec![ContentBlock::text(format!(
            "{path} is a binary file of {total} bytes; only text files and images can be read"
        ))]);
    };
    let start = offset.saturating_add(skip as u64);
    let end = start.saturating_add(take as u64);
    let mut blocks = vec![ContentBlock::text(text)];
    if start > 0 || end < total {
        blocks.push(ContentBlock::text(format!(
            "[bytes {start}..{end} of {total}{}]",
            if end < total {
                format!("; continue with offset={end}")
            } else {
                String::new()
            }
        )));
    }
    CallToolResult::success(blocks)
}

/// An image as the agent gets it (very large ones scaled down).
fn image_block(b64: &str, mime: &str) -> ContentBlock {
    let (data, mime) = super::render::agent_image(b64, mime);
    ContentBlock::image(data, mime)
}

/// The size of base64 content once decoded; `None` when it is not base64.
fn decoded_len(b64: &str) -> Option<usize> {
    let compact: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(compact).ok().map(|v| v.len())
}

/// The image `path` is, if its name says so (read_file shows these as images).
pub fn image_mime(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    if lower.ends_with(".png") {
        Some("image/png")
    } else if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
        Some("image/jpeg")
    } else {
        None
    }
}

/// The contents API format for an upload, after checking its encoding and size.
pub fn upload_format(
    encoding: Option<&str>,
    content: &str,
    limit: usize,
) -> Result<&'static str, GatewayError> {
    let (format, size) = match encoding.unwrap_or("text") {
        "text" => ("text", content.len()),
        "base64" => (
            "base64",
            decoded_len(content)
                .ok_or_else(|| GatewayError::Invalid("content is not valid base64".into()))?,
        ),
        other => {
            return Err(GatewayError::Invalid(format!(
                "encoding {other:?} is not supported: use \"text\" or \"base64\""
            )));
        }
    };
    if size > limit {
        return Err(GatewayError::Invalid(format!(
            "the file is {size} bytes; uploads are limited to {limit} bytes"
        )));
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(r: &CallToolResult) -> Vec<String> {
        r.content
            .iter()
            .map(|c| c.as_text().unwrap().text.clone())
            .collect()
    }

    #[test]
    fn long_text_is_paged_on_character_boundaries() {
        let r = text_page("a.txt", b"4567", 4, 3, 10);
        assert_eq!(texts(&r)[0], "456");
        assert!(texts(&r)[1].contains("bytes 4..7 of 10; continue with offset=7"));
        assert_eq!(texts(&text_page("a.txt", b"abc", 0, 100, 3)).len(), 1);
        // "é" is two bytes: a page ending inside it stops before it, one starting inside
        // it starts after it.
        let word = "aéb".as_bytes();
        let end_cut = text_page("a.txt", word, 0, 2, 4);
        assert_eq!(texts(&end_cut)[0], "a");
        assert!(texts(&end_cut)[1].contains("offset=1"));
        let start_cut = text_page("a.txt", &word[2..], 2, 10, 4);
        assert_eq!(texts(&start_cut)[0], "b");
        assert!(texts(&start_cut)[1].starts_with("[bytes 3..4 of 4"));
        let binary = text_page("x.bin", &[0xff, 0xfe, 0x00, 0x41], 0, 10, 4);
        assert!(texts(&binary)[0].contains("binary file of 4 bytes"));
        let nul = text_page("x.bin", b"ab\0cd", 0, 10, 5);
        assert!(texts(&nul)[0].contains("binary file of 5 bytes"));
    }

    #[test]
    fn uploads_are_checked() {
        assert_eq!(upload_format(None, "hi", 10).unwrap(), "text");
        assert_eq!(upload_format(Some("base64"), "aGk=", 10).unwrap(), "base64");
        assert!(upload_format(Some("base64"), "***", 10).is_err());
        assert!(upload_format(Some("utf-16"), "x", 10).is_err());
        assert!(upload_format(None, "0123456789ab", 10).is_err());
    }
}
