//! Excel workbooks: an `.xlsx` upload is read with calamine from the spool (seekable), and its first sheet (or the
//! one named) is turned into CSV text for the same lead reader as any CSV: sheet row N is line N, so row errors
//! point at the row the user sees. Cells are written as the sheet holds them: text as it is (a line break inside
//! a cell becomes a space, which keeps the line numbers), whole numbers without a decimal point, dates as
//! `YYYY-MM-DD` (with the time when there is one), booleans as `TRUE`/`FALSE`.
//!
//! The sheet's cells are streamed in file order, never laid out as a grid (a few-kilobyte workbook can name a
//! cell a billion cells away), and bounded: the zip entries must unpack to at most [`MAX_UNPACKED`] before
//! calamine opens them (its shared strings are held in memory), cells beyond column [`MAX_COLUMNS`] are refused,
//! and the CSV text may reach [`MAX_TEXT`]. Other spreadsheet formats (`.xls`, `.xlsb`, `.ods`) are refused with
//! the advice to save the sheet as `.xlsx` or CSV: the library lays those out whole, which cannot be bounded.

use std::io::{Read, Seek, SeekFrom};

use calamine::{DataRef, Reader, Xlsx};

/// Most bytes an xlsx's zip entries may unpack to.
pub const MAX_UNPACKED: u64 = 256 * 1024 * 1024;
/// Most bytes of CSV text one sheet may become.
pub const MAX_TEXT: usize = 256 * 1024 * 1024;
/// Columns a sheet may use (the CSV reader's own limit on fields).
pub const MAX_COLUMNS: u32 = 512;

/// Why a workbook could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WorkbookError {
    #[error("the workbook cannot be read ({0}): save the sheet as CSV (UTF-8) and upload that")]
    Unreadable(String),
    #[error("this is {0}: save the sheet as an Excel Workbook (.xlsx) or as CSV (UTF-8) and upload that")]
    Unsupported(&'static str),
    #[error("the workbook has no sheet named `{name}`; its sheets are: {}", sheets.join(", "))]
    NoSuchSheet { name: String, sheets: Vec<String> },
    #[error("the workbook has no sheets")]
    NoSheets,
    #[error("the sheet uses columns beyond {MAX_COLUMNS} (row {row}): remove them, or save the sheet as CSV")]
    TooWide { row: u32 },
    #[error("the workbook is too large to read as a workbook: save the sheet as CSV (UTF-8), which streams")]
    TooLarge,
}

/// A sheet as CSV text, with the workbook's format (`xlsx`) and the sheet's name.
#[derive(Debug)]
pub struct SheetCsv {
    pub csv: Vec<u8>,
    pub format: &'static str,
    pub sheet: String,
}

/// Reads the sheet `sheet` (default: the first) of the workbook in `file`.
pub fn sheet_csv<RS: Read + Seek>(mut file: RS, sheet: Option<&str>) -> Result<SheetCsv, WorkbookError> {
    check_xlsx(&mut file)?;
    let unreadable = |e: &dyn std::fmt::Display| WorkbookError::Unreadable(e.to_string());
    let mut workbook: Xlsx<RS> = Xlsx::new(file).map_err(|e| unreadable(&e))?;
    let sheets = workbook.sheet_names();
    let name =
        match sheet {
            Some(name) => sheets.iter().find(|s| s.as_str() == name).cloned().ok_or_else(|| {
                WorkbookError::NoSuchSheet { name: name.to_owned(), sheets: sheets.clone() }
            })?,
            None => sheets.first().cloned().ok_or(WorkbookError::NoSheets)?,
        };
    let mut cells = workbook.worksheet_cells_reader(&name).map_err(|e| unreadable(&e))?;
    let mut csv = Vec::new();
    // The line and column the text is at: the sheet's row (0-based, so line - 1) and the next cell's column.
    let (mut row, mut column) = (0u32, 0u32);
    while let Some(cell) = cells.next_cell().map_err(|e| unreadable(&e))? {
        let (r, c) = cell.get_position();
        if c >= MAX_COLUMNS {
            return Err(WorkbookError::TooWide { row: r + 1 });
        }
        if r < row || (r == row && c < column) {
            return Err(WorkbookError::Unreadable("its cells are out of order".into()));
        }
        // Rows are newlines, missing cells are empty fields: every cell lands on its row's line and column.
        csv.extend(std::iter::repeat_n(b'\n', (r - row) as usize));
        if r > row {
            (row, column) = (r, 0);
        }
        csv.extend(std::iter::repeat_n(b',', (c - column) as usize));
        write_field(&mut csv, &render(cell.get_value()));
        column = c;
        if csv.len() > MAX_TEXT {
            return Err(WorkbookError::TooLarge);
        }
    }
    csv.push(b'\n');
    Ok(SheetCsv { csv, format: "xlsx", sheet: name })
}

/// Refuses what is not an xlsx (naming what it is), and an xlsx whose entries unpack to more than
/// [`MAX_UNPACKED`], before anything is unpacked.
fn check_xlsx<RS: Read + Seek>(file: &mut RS) -> Result<(), WorkbookError> {
    let mut signature = [0u8; 4];
    let read = file.read(&mut signature).map_err(|e| WorkbookError::Unreadable(e.to_string()))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| WorkbookError::Unreadable(e.to_string()))?;
    if signature[..read] == *b"\xD0\xCF\x11\xE0" {
        return Err(WorkbookError::Unsupported("an old Excel workbook (.xls)"));
    }
    let mut archive =
        zip::ZipArchive::new(&mut *file).map_err(|e| WorkbookError::Unreadable(e.to_string()))?;
    let (mut total, mut format) = (0u64, None);
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(|e| WorkbookError::Unreadable(e.to_string()))?;
        total = total.saturating_add(entry.size());
        let name = entry.name().map_err(|e| WorkbookError::Unreadable(e.to_string()))?;
        format = format.or(match name.as_ref() {
            "xl/workbook.xml" => Some("xlsx"),
            "xl/workbook.bin" => Some("xlsb"),
            "content.xml" => Some("ods"),
            _ => None,
        });
    }
    match format {
        Some("xlsx") if total > MAX_UNPACKED => return Err(WorkbookError::TooLarge),
        Some("xlsx") => {}
        Some("xlsb") => return Err(WorkbookError::Unsupported("an Excel binary workbook (.xlsb)")),
        Some(_) => return Err(WorkbookError::Unsupported("an OpenDocument spreadsheet (.ods)")),
        None => return Err(WorkbookError::Unsupported("a ZIP archive that is not a workbook")),
    }
    drop(archive);
    file.seek(SeekFrom::Start(0)).map_err(|e| WorkbookError::Unreadable(e.to_string()))?;
    Ok(())
}

/// A cell as the sheet shows it, near enough.
fn render(cell: &DataRef<'_>) -> String {
    let text = match cell {
        DataRef::Empty => String::new(),
        DataRef::String(s) | DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => s.clone(),
        DataRef::SharedString(s) => (*s).to_owned(),
        DataRef::Int(i) => i.to_string(),
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        DataRef::Float(f) => f.to_string(),
        DataRef::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        DataRef::DateTime(d) if d.is_duration() => d.as_f64().to_string(),
        DataRef::DateTime(d) => {
            // calamine's conversion: clamped, and aware of the 1904 date system of old Mac workbooks.
            let (y, mo, day, h, mi, s, _) = d.to_ymd_hms_milli();
            if (h, mi, s) == (0, 0, 0) {
                format!("{y:04}-{mo:02}-{day:02}")
            } else {
                format!("{y:04}-{mo:02}-{day:02} {h:02}:{mi:02}:{s:02}")
            }
        }
        DataRef::Error(e) => e.to_string(),
    };
    // A line break inside a cell would move every later row off its line number.
    if text.contains(['\n', '\r']) { text.replace("\r\n", " ").replace(['\n', '\r'], " ") } else { text }
}

/// A CSV field, quoted when it must be (including `;` and tab, which the reader could take for the delimiter).
fn write_field(out: &mut Vec<u8>, value: &str) {
    if value.contains([',', '"', ';', '\t']) {
        out.push(b'"');
        out.extend_from_slice(value.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(value.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_text_read_as_they_show() {
        assert_eq!(render(&DataRef::Float(50_000.0)), "50000");
        assert_eq!(render(&DataRef::Float(0.25)), "0.25");
        assert_eq!(render(&DataRef::Bool(true)), "TRUE");
        assert_eq!(render(&DataRef::String("two\r\nlines\nhere".into())), "two lines here");
        let mut out = Vec::new();
        write_field(&mut out, "Director, \"Sales\"");
        assert_eq!(out, b"\"Director, \"\"Sales\"\"\"");
    }

    #[test]
    fn what_is_not_an_xlsx_is_refused_saying_what_it_is() {
        let err =
            sheet_csv(std::io::Cursor::new(b"PK\x03\x04 not really a zip".to_vec()), None).expect_err("no");
        assert!(matches!(err, WorkbookError::Unreadable(_)), "{err}");
        let err = sheet_csv(std::io::Cursor::new(b"\xD0\xCF\x11\xE0 old".to_vec()), None).expect_err("no");
        assert_eq!(
            err.to_string(),
            "this is an old Excel workbook (.xls): save the sheet as an Excel Workbook (.xlsx) or as CSV (UTF-8) and upload that"
        );
    }
}
