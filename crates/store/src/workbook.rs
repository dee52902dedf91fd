//! Workbooks: an Excel (`.xlsx`, `.xls`, `.xlsb`) or OpenDocument (`.ods`) upload is read with calamine, which
//! needs a seekable file (the spool), and its first sheet (or the one named) is turned into CSV text for the same
//! lead reader as any CSV: sheet row N is line N, so row errors point at the row the user sees. Cells are written
//! as the sheet holds them: text as it is, whole numbers without a decimal point, dates as `YYYY-MM-DD` (with the
//! time when there is one), booleans as `TRUE`/`FALSE`.
//!
//! A workbook is unpacked in memory, so it is bounded twice: the zip entries (xlsx, xlsb, ods) must unpack to at
//! most [`MAX_UNPACKED`] before calamine opens them (a zip bomb stops here), and the sheet's CSV text to at most
//! [`MAX_TEXT`]. Larger sheets are refused with the advice to upload them as CSV, which streams.

use std::io::{Read, Seek, SeekFrom};

use calamine::{Data, Ods, Reader, Sheets, Xls, Xlsb, Xlsx};

/// Most bytes a workbook's zip entries may unpack to.
pub const MAX_UNPACKED: u64 = 1024 * 1024 * 1024;
/// Most bytes of CSV text one sheet may become.
pub const MAX_TEXT: usize = 512 * 1024 * 1024;

/// Why a workbook could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WorkbookError {
    #[error("the workbook cannot be read ({0}): save the sheet as CSV (UTF-8) and upload that")]
    Unreadable(String),
    #[error("the workbook has no sheet named `{name}`; its sheets are: {}", sheets.join(", "))]
    NoSuchSheet { name: String, sheets: Vec<String> },
    #[error("the workbook has no sheets")]
    NoSheets,
    #[error("the workbook is too large to read as a workbook: save the sheet as CSV (UTF-8), which streams")]
    TooLarge,
}

/// A sheet as CSV text, with the workbook's format (`xlsx`, `xls`, `xlsb`, `ods`) and the sheet's name.
#[derive(Debug)]
pub struct SheetCsv {
    pub csv: Vec<u8>,
    pub format: &'static str,
    pub sheet: String,
}

/// Reads the sheet `sheet` (default: the first) of the workbook in `file`.
pub fn sheet_csv<RS: Read + Seek>(mut file: RS, sheet: Option<&str>) -> Result<SheetCsv, WorkbookError> {
    let format = format_of(&mut file)?;
    let unreadable = |e: &dyn std::fmt::Display| WorkbookError::Unreadable(e.to_string());
    let mut workbook = match format {
        "xlsx" => Sheets::Xlsx(Xlsx::new(file).map_err(|e| unreadable(&e))?),
        "xlsb" => Sheets::Xlsb(Xlsb::new(file).map_err(|e| unreadable(&e))?),
        "ods" => Sheets::Ods(Ods::new(file).map_err(|e| unreadable(&e))?),
        _ => Sheets::Xls(Xls::new(file).map_err(|e| unreadable(&e))?),
    };
    let sheets = workbook.sheet_names();
    let name =
        match sheet {
            Some(name) => sheets.iter().find(|s| s.as_str() == name).cloned().ok_or_else(|| {
                WorkbookError::NoSuchSheet { name: name.to_owned(), sheets: sheets.clone() }
            })?,
            None => sheets.first().cloned().ok_or(WorkbookError::NoSheets)?,
        };
    let range = workbook.worksheet_range(&name).map_err(|e| WorkbookError::Unreadable(e.to_string()))?;
    let mut csv = Vec::new();
    // Rows above the used range are blank lines, so that line numbers are the sheet's row numbers.
    let first_row = range.start().map_or(0, |(row, _)| row as usize);
    csv.extend(std::iter::repeat_n(b'\n', first_row));
    for row in range.rows() {
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                csv.push(b',');
            }
            write_field(&mut csv, &render(cell));
        }
        csv.push(b'\n');
        if csv.len() > MAX_TEXT {
            return Err(WorkbookError::TooLarge);
        }
    }
    Ok(SheetCsv { csv, format, sheet: name })
}

/// The workbook's format, from its zip entries (`xl/workbook.xml`: xlsx, `xl/workbook.bin`: xlsb, `content.xml`:
/// ods) or, for a file that is not a zip, Excel's old OLE format (`xls`). A zip whose entries unpack to more than
/// [`MAX_UNPACKED`] is refused here, before anything is unpacked.
fn format_of<RS: Read + Seek>(file: &mut RS) -> Result<&'static str, WorkbookError> {
    let format = match zip::ZipArchive::new(&mut *file) {
        Ok(mut archive) => {
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
            if total > MAX_UNPACKED {
                return Err(WorkbookError::TooLarge);
            }
            format.ok_or_else(|| WorkbookError::Unreadable("a ZIP archive that is not a workbook".into()))?
        }
        Err(_) => "xls",
    };
    file.seek(SeekFrom::Start(0)).map_err(|e| WorkbookError::Unreadable(e.to_string()))?;
    Ok(format)
}

/// A cell as the sheet shows it, near enough.
fn render(cell: &Data) -> String {
    match cell {
        Data::Empty => String::new(),
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        Data::DateTime(d) if d.is_duration() => d.as_f64().to_string(),
        Data::DateTime(d) => excel_date(d.as_f64()),
        Data::Error(e) => e.to_string(),
    }
}

/// An Excel serial date (days since 1899-12-30, the fraction being the time of day) as `YYYY-MM-DD[ HH:MM:SS]`.
fn excel_date(serial: f64) -> String {
    let epoch = time::Date::from_calendar_date(1899, time::Month::December, 30).expect("a valid date");
    let days = serial.floor();
    let Some(date) = epoch.checked_add(time::Duration::days(days as i64)) else {
        return serial.to_string();
    };
    let seconds = ((serial - days) * 86_400.0).round() as i64;
    let day = format!("{:04}-{:02}-{:02}", date.year(), u8::from(date.month()), date.day());
    if seconds == 0 {
        day
    } else {
        format!("{day} {:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60)
    }
}

/// A CSV field, quoted when it must be.
fn write_field(out: &mut Vec<u8>, value: &str) {
    if value.contains([',', '"', '\n', '\r']) {
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
    fn dates_and_numbers_read_as_they_show() {
        assert_eq!(excel_date(45_993.0), "2025-12-02");
        assert_eq!(excel_date(45_993.5), "2025-12-02 12:00:00");
        assert_eq!(render(&Data::Float(50_000.0)), "50000");
        assert_eq!(render(&Data::Float(0.25)), "0.25");
        assert_eq!(render(&Data::Bool(true)), "TRUE");
        let mut out = Vec::new();
        write_field(&mut out, "Director, \"Sales\"");
        assert_eq!(out, b"\"Director, \"\"Sales\"\"\"");
    }

    #[test]
    fn what_is_not_a_workbook_is_refused() {
        let err =
            sheet_csv(std::io::Cursor::new(b"PK\x03\x04 not really a zip".to_vec()), None).expect_err("no");
        assert!(matches!(err, WorkbookError::Unreadable(_)), "{err}");
    }
}
