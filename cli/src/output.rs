//! Listings: an aligned table for people, or the items as JSON for scripts (`--output json`).

use serde_json::Value;

use crate::args::Format;

/// A column: its heading and how a cell is taken from an item.
pub type Column = (&'static str, fn(&Value) -> String);

pub fn print_list(format: Format, items: &[Value], columns: &[Column]) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(items).unwrap_or_default()),
        Format::Table => print!("{}", table(items, columns)),
    }
}

fn table(items: &[Value], columns: &[Column]) -> String {
    let rows: Vec<Vec<String>> = std::iter::once(columns.iter().map(|(heading, _)| (*heading).to_owned()).collect())
        .chain(items.iter().map(|item| columns.iter().map(|(_, cell)| one_line(&cell(item))).collect()))
        .collect();
    let widths: Vec<usize> =
        (0..columns.len()).map(|i| rows.iter().map(|row| row[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r', '\t'], " ")
}

/// A field as text: strings bare, null as `-`, anything else as JSON.
pub fn field(item: &Value, name: &str) -> String {
    match &item[name] {
        Value::Null => "-".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_line_up_and_nulls_show_as_a_dash() {
        let items = [json!({"id": "a", "n": null}), json!({"id": "long-id", "n": 3})];
        let columns: [Column; 2] = [("ID", |item| field(item, "id")), ("N", |item| field(item, "n"))];
        assert_eq!(table(&items, &columns), "ID       N\na        -\nlong-id  3\n");
    }
}
