//! The three output formats of `tagger score`: one record per file, written as results arrive.
//!
//! - `jsonl`: one JSON object per line. Scored photo:
//!   `{"path","model","weights","tags":[{"label","class_id","confidence"}],"warning"?}`
//!   (`tags` may be empty when `--min-confidence` leaves none); digit:
//!   `{"path","model":"digits","weights","digit","confidence","probabilities":[10 numbers]}`;
//!   failure: `{"path","error":{"code","message"}}`.
//! - `csv` (RFC 4180 quoting, `\n` line ends): header
//!   `path,rank,label,class_id,confidence,error_code,error_message`, then one row per tag (rank
//!   1 = best); a digit is one row with rank 1 and the digit as label and class id; a failure is
//!   one row with only `path`, `error_code` and `error_message`; a photo left with no tag by
//!   `--min-confidence` is one row with only `path`.
//! - `table`: aligned columns for people: path, best tag, its confidence, the other tags.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use serde::Serialize;

use crate::error::Error;
use crate::models::{ModelName, Weights};
use crate::pipeline::Tag;

use super::{Outcome, Problem};

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// JSON Lines: one object per file.
    #[default]
    Jsonl,
    /// Comma-separated values, one row per tag.
    Csv,
    /// Aligned text columns for people.
    Table,
}

impl OutputFormat {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Jsonl => "jsonl",
            OutputFormat::Csv => "csv",
            OutputFormat::Table => "table",
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OutputFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "jsonl" => Ok(OutputFormat::Jsonl),
            "csv" => Ok(OutputFormat::Csv),
            "table" => Ok(OutputFormat::Table),
            _ => Err(Error::bad_parameter(
                "format",
                format!("`{s}` is not one of jsonl, csv, table"),
            )),
        }
    }
}

/// The CSV header.
pub const CSV_HEADER: &str = "path,rank,label,class_id,confidence,error_code,error_message";

/// The widest the path column of a table grows; longer paths push their row out of line.
const MAX_PATH_WIDTH: usize = 72;

/// Writes records in one format.
pub struct RecordWriter<W: Write> {
    out: W,
    format: OutputFormat,
    weights: Weights,
    path_width: usize,
    tag_width: usize,
}

#[derive(Serialize)]
struct TagsRecord<'a> {
    path: &'a str,
    model: ModelName,
    weights: Weights,
    tags: &'a [Tag],
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<&'a str>,
}

#[derive(Serialize)]
struct DigitRecord<'a> {
    path: &'a str,
    model: ModelName,
    weights: Weights,
    digit: usize,
    confidence: f64,
    probabilities: &'a [f64],
}

#[derive(Serialize)]
struct ErrorRecord<'a> {
    path: &'a str,
    error: &'a Problem,
}

impl<W: Write> RecordWriter<W> {
    /// A writer for `format`. `weights` is the model's (for digit records); `longest_path` and
    /// `longest_label` size the table's columns.
    pub fn new(
        out: W,
        format: OutputFormat,
        weights: Weights,
        longest_path: usize,
        longest_label: usize,
    ) -> Self {
        RecordWriter {
            out,
            format,
            weights,
            path_width: longest_path.clamp(4, MAX_PATH_WIDTH),
            // Wide enough for "error: <code>" too.
            tag_width: longest_label.max(24),
        }
    }

    /// Writes the header, if the format has one.
    pub fn header(&mut self) -> io::Result<()> {
        match self.format {
            OutputFormat::Jsonl => Ok(()),
            OutputFormat::Csv => writeln!(self.out, "{CSV_HEADER}"),
            OutputFormat::Table => {
                let line = self.table_row("PATH", "TAG", "CONF", "OTHER TAGS");
                writeln!(self.out, "{line}")
            }
        }
    }

    /// Writes the record of one file (nothing for a skipped one).
    pub fn record(&mut self, path: &str, outcome: &Outcome) -> io::Result<()> {
        match self.format {
            OutputFormat::Jsonl => self.jsonl(path, outcome),
            OutputFormat::Csv => self.csv(path, outcome),
            OutputFormat::Table => self.table(path, outcome),
        }
    }

    /// Flushes buffered records.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn jsonl(&mut self, path: &str, outcome: &Outcome) -> io::Result<()> {
        let line = match outcome {
            Outcome::Skipped => return Ok(()),
            Outcome::Tags(c) => serde_json::to_string(&TagsRecord {
                path,
                model: c.model,
                weights: c.weights,
                tags: &c.tags,
                warning: c.warning.as_deref(),
            }),
            Outcome::Digit(d) => serde_json::to_string(&DigitRecord {
                path,
                model: d.model,
                weights: self.weights,
                digit: d.digit,
                confidence: d.confidence,
                probabilities: &d.probabilities,
            }),
            Outcome::Failed(problem) => serde_json::to_string(&ErrorRecord {
                path,
                error: problem,
            }),
        }
        .map_err(io::Error::other)?;
        writeln!(self.out, "{line}")
    }

    fn csv(&mut self, path: &str, outcome: &Outcome) -> io::Result<()> {
        let path = csv_field(path);
        match outcome {
            Outcome::Skipped => Ok(()),
            Outcome::Tags(c) if c.tags.is_empty() => writeln!(self.out, "{path},,,,,,"),
            Outcome::Tags(c) => {
                for (rank, tag) in c.tags.iter().enumerate() {
                    writeln!(
                        self.out,
                        "{path},{},{},{},{},,",
                        rank + 1,
                        csv_field(&tag.label),
                        tag.class_id,
                        tag.confidence
                    )?;
                }
                Ok(())
            }
            Outcome::Digit(d) => writeln!(
                self.out,
                "{path},1,{},{},{},,",
                d.digit, d.digit, d.confidence
            ),
            Outcome::Failed(p) => writeln!(
                self.out,
                "{path},,,,,{},{}",
                csv_field(p.code),
                csv_field(&p.message)
            ),
        }
    }

    fn table(&mut self, path: &str, outcome: &Outcome) -> io::Result<()> {
        let line = match outcome {
            Outcome::Skipped => return Ok(()),
            Outcome::Tags(c) => match c.tags.split_first() {
                None => self.table_row(path, "-", "", "(no tag above --min-confidence)"),
                Some((best, rest)) => {
                    let others: Vec<String> = rest
                        .iter()
                        .map(|t| format!("{} {}", t.label, percent(t.confidence)))
                        .collect();
                    self.table_row(
                        path,
                        &best.label,
                        &percent(best.confidence),
                        &others.join(", "),
                    )
                }
            },
            Outcome::Digit(d) => {
                self.table_row(path, &d.digit.to_string(), &percent(d.confidence), "")
            }
            Outcome::Failed(p) => {
                self.table_row(path, &format!("error: {}", p.code), "", &p.message)
            }
        };
        writeln!(self.out, "{line}")
    }

    fn table_row(&self, path: &str, tag: &str, confidence: &str, rest: &str) -> String {
        let path = one_line(path);
        let line = format!(
            "{path:<pw$}  {tag:<tw$}  {confidence:>6}  {rest}",
            pw = self.path_width,
            tw = self.tag_width
        );
        line.trim_end().to_string()
    }
}

fn percent(p: f64) -> String {
    format!("{:.1}%", p * 100.0)
}

/// Control characters (a newline in a file name) would break a table row.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A CSV field, quoted per RFC 4180 when it holds a comma, a quote, a line break or
/// leading/trailing spaces.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    let needs_quotes = s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("a/b.jpg"), "a/b.jpg");
        assert_eq!(csv_field("a,b.jpg"), "\"a,b.jpg\"");
        assert_eq!(
            csv_field("say \"cheese\".jpg"),
            "\"say \"\"cheese\"\".jpg\""
        );
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn formats_parse() {
        assert_eq!("csv".parse::<OutputFormat>().unwrap(), OutputFormat::Csv);
        assert_eq!(
            "xml".parse::<OutputFormat>().unwrap_err().code(),
            "bad_parameter"
        );
    }
}
