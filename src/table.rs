//! Plain-text tables for terminals: columns padded to their widest cell,
//! the header in bold on a terminal.

/// Renders `rows` under `header`, two spaces between columns, trailing
/// spaces trimmed.
pub fn render(header: &[&str], rows: &[Vec<String>], terminal: bool) -> String {
    render_aligned(header, rows, &[], terminal)
}

/// [`render`], with the columns numbered in `right` (from 0) aligned to
/// the right, as numbers read best.
pub fn render_aligned(
    header: &[&str],
    rows: &[Vec<String>],
    right: &[usize],
    terminal: bool,
) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = widths.get(i).copied().unwrap_or(0);
            let pad = " ".repeat(pad.saturating_sub(cell.chars().count()));
            if right.contains(&i) {
                text.push_str(&pad);
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&pad);
            }
        }
        text.trim_end().to_owned()
    };
    let head = line(&mut header.iter().copied());
    let mut out = if terminal {
        format!("\x1b[1m{head}\x1b[0m\n")
    } else {
        format!("{head}\n")
    };
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_columns_and_trims() {
        let rows = vec![
            vec!["gpu-1".to_owned(), "healthy".to_owned(), String::new()],
            vec!["a".to_owned(), "unreachable".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            render(&["NAME", "STATUS", "NOTE"], &rows, false),
            "NAME   STATUS       NOTE\ngpu-1  healthy\na      unreachable  x\n"
        );
        assert!(render(&["A"], &[], true).starts_with("\x1b[1mA"));
        let rows = vec![vec!["a".to_owned(), "1,000".to_owned()]];
        assert_eq!(
            render_aligned(&["NAME", "N"], &rows, &[1], false),
            "NAME      N\na     1,000\n"
        );
    }
}
