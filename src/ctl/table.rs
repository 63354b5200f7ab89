//! Plain-text tables for `fetchgate ctl`: aligned columns for listings, `key  value`
//! lines for single objects. Values come from the daemon and, inside reports, from
//! builders' requests, so control characters are escaped before they reach a terminal.

use std::fmt::Write;

use serde_json::Value;

/// A value as a table cell: strings bare, null as `-`, the rest as JSON.
pub fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    escape_controls(&text)
}

fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Columns aligned on the widest cell, headers first; the last column is not padded.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<w$}  ");
            }
        }
        out.push('\n');
    }
    out
}

/// `key  value` lines for the scalar members of an object, keys aligned.
pub fn key_values(object: &Value, keys: &[&str]) -> String {
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for k in keys {
        let _ = writeln!(out, "{k:<width$}  {}", cell(&object[*k]));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let t = render(
            &["ID", "STATE"],
            &[
                vec!["a".into(), "active".into()],
                vec!["longer".into(), "ended".into()],
            ],
        );
        assert_eq!(t, "ID      STATE\na       active\nlonger  ended\n");
    }

    #[test]
    fn cells_escape_control_characters_and_show_null_as_dash() {
        assert_eq!(cell(&json!("a\u{1b}[2Jb")), "a\\u{1b}[2Jb");
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&json!(600)), "600");
    }

    #[test]
    fn key_values_align_keys() {
        let v = json!({"id": "x", "token": "t"});
        assert_eq!(key_values(&v, &["id", "token"]), "id     x\ntoken  t\n");
    }
}
