//! `read_file` and `upload_file` over the contents API: paging through long text, images
//! as image content, and an upload size limit.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rmcp::model::{CallToolResult, ContentBlock};

use super::GatewayError;
use crate::jupyter::ContentModel;

/// The content of a file model, from byte `offset`, at most `limit` bytes of text.
pub fn read(
    model: &ContentModel,
    offset: usize,
    limit: usize,
) -> Result<CallToolResult, GatewayError> {
    if model.kind == "directory" {
        return Err(GatewayError::Invalid(format!(
            "{} is a directory: use list_files",
            model.path
        )));
    }
    let text = match &model.content {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if model.format.as_deref() == Some("base64") {
        if let Some(mime) = image_mime(&model.path) {
            return Ok(CallToolResult::success(vec![image_block(&text, mime)]));
        }
        let size = decoded_len(&text).unwrap_or(0);
        return Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "{} is a binary file of {size} bytes; only text files and images can be read",
            model.path
        ))]));
    }
    let total = text.len();
    let mut start = offset.min(total);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let mut end = start.saturating_add(limit).min(total);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut blocks = vec![ContentBlock::text(&text[start..end])];
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
    Ok(CallToolResult::success(blocks))
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

fn image_mime(path: &str) -> Option<&'static str> {
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
    use serde_json::json;

    fn model(content: &str) -> ContentModel {
        serde_json::from_value(json!({
            "name": "a.txt", "path": "a.txt", "type": "file", "format": "text", "content": content
        }))
        .unwrap()
    }

    #[test]
    fn long_text_is_paged() {
        let r = read(&model("0123456789"), 4, 3).unwrap();
        assert_eq!(r.content[0].as_text().unwrap().text, "456");
        assert!(r.content[1].as_text().unwrap().text.contains("offset=7"));
        let whole = read(&model("abc"), 0, 100).unwrap();
        assert_eq!(whole.content.len(), 1);
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
