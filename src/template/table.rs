//! Go's `text/tabwriter` as docker configures it for tables (`minwidth 10, tabwidth 1, padding 3,
//! padchar ' ', flags 0`): cells end at a tab, and each column is as wide as its widest cell plus 3 (at
//! least 10) over every run of consecutive lines that have a cell in it. A line's last cell is not part
//! of any column, so it is never padded.

/// Align tab-separated text as docker's tables do.
pub fn align(text: &str) -> String {
    align_with(text, 10, 3)
}

fn align_with(text: &str, minwidth: usize, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let mut widths = Vec::new();
    let mut out = String::with_capacity(text.len() * 2);
    format(&lines, &mut widths, 0, lines.len(), minwidth, padding, &mut out);
    out
}

/// tabwriter's `format`: the column blocks of column `widths.len()` between lines `line0` and `line1`.
fn format(
    lines: &[Vec<&str>],
    widths: &mut Vec<usize>,
    mut line0: usize,
    line1: usize,
    minwidth: usize,
    padding: usize,
    out: &mut String,
) {
    let column = widths.len();
    let mut this = line0;
    while this < line1 {
        if column + 1 >= lines[this].len() {
            this += 1;
            continue;
        }
        // A column block starts here: print the lines before it.
        write_lines(lines, widths, line0, this, out);
        line0 = this;
        let mut width = minwidth;
        while this < line1 && column + 1 < lines[this].len() {
            width = width.max(lines[this][column].chars().count() + padding);
            this += 1;
        }
        widths.push(width);
        format(lines, widths, line0, this, minwidth, padding, out);
        widths.pop();
        line0 = this;
    }
    write_lines(lines, widths, line0, line1, out);
}

fn write_lines(lines: &[Vec<&str>], widths: &[usize], line0: usize, line1: usize, out: &mut String) {
    for (i, line) in lines.iter().enumerate().take(line1).skip(line0) {
        for (j, cell) in line.iter().enumerate() {
            out.push_str(cell);
            if j < widths.len() && j + 1 < line.len() {
                let n = cell.chars().count();
                out.extend(std::iter::repeat_n(' ', widths[j].saturating_sub(n)));
            }
        }
        if i + 1 < lines.len() {
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::align;

    #[test]
    fn docker_table_layout() {
        // `docker ps` with one container: columns at least 10 wide, 3 spaces after the widest cell.
        let t = align("CONTAINER ID\tIMAGE\tNAMES\n4c01db0b339c\tubuntu:22.04\tweb\n");
        assert_eq!(t, "CONTAINER ID   IMAGE          NAMES\n4c01db0b339c   ubuntu:22.04   web\n");
        // A short column still takes the minimum width; the last cell is never padded.
        assert_eq!(align("A\tB\nx\ty\n"), "A         B\nx         y\n");
    }
}
