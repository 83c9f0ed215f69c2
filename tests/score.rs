//! `tagger score` run as a process on fixture folders built in a temporary directory.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::assert::assert_ranked_tags;
use common::fixtures::{self, TempDir};
use common::process::{stderr, stdout, tagger};
use serde_json::Value;

/// The digits evaluation pictures (`<digit>_<nnn>.png`).
fn digits_eval() -> PathBuf {
    fixtures::path("digits/eval")
}

/// A folder tree of photos and problems in a scratch folder.
struct Fixture {
    root: PathBuf,
    _dir: TempDir,
}

/// ```text
/// top.jpg                      photo
/// a/coffee.jpg                 photo
/// a/b/loop -> ..               symlink loop
/// a/b/rocket.jpg               photo
/// a/b/tiny.png                 photo
/// c/corrupt.jpg                truncated JPEG        -> undecodable_image
/// c/link.jpg -> ../a/coffee.jpg                       symlink to a file
/// c/motorcycle.dat             JPEG, wrong extension -> scored
/// c/not_an_image.jpg           text named .jpg       -> unsupported_format
/// c/notes.txt                  text                  -> skipped
/// c/unreadable.jpg -> /proc/self/mem                  -> unreadable
/// ```
///
/// `c/unreadable.jpg` opens but every read fails (EIO: the reading process's own memory at
/// address 0 is unmapped), for root too, unlike a mode-000 file.
fn fixture() -> Fixture {
    let dir = TempDir::new("score-tree");
    for (name, to) in [
        ("chelsea.jpg", "top.jpg"),
        ("coffee.jpg", "a/coffee.jpg"),
        ("rocket.jpg", "a/b/rocket.jpg"),
        ("tiny.png", "a/b/tiny.png"),
        ("corrupt_truncated.jpg", "c/corrupt.jpg"),
        ("not_an_image.jpg", "c/not_an_image.jpg"),
        ("motorcycle.jpg", "c/motorcycle.dat"),
    ] {
        dir.copy_image(name, to);
    }
    let root = dir.path().to_path_buf();
    fs::write(root.join("c/notes.txt"), "holiday 2021, not a photo\n").unwrap();
    std::os::unix::fs::symlink("../a/coffee.jpg", root.join("c/link.jpg")).unwrap();
    std::os::unix::fs::symlink("..", root.join("a/b/loop")).unwrap();
    std::os::unix::fs::symlink("/proc/self/mem", root.join("c/unreadable.jpg")).unwrap();
    Fixture { root, _dir: dir }
}

fn score(root: &Path, args: &[&str]) -> Output {
    tagger()
        .arg("score")
        .arg(root)
        .args(args)
        .output()
        .expect("run tagger")
}

fn jsonl(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// `path` relative to the fixture root.
fn rel(root: &Path, record_path: &str) -> String {
    Path::new(record_path)
        .strip_prefix(root)
        .unwrap_or_else(|_| panic!("{record_path} is not under {}", root.display()))
        .to_string_lossy()
        .into_owned()
}

const EXPECTED_ORDER: [&str; 10] = [
    "a/b/loop",
    "a/b/rocket.jpg",
    "a/b/tiny.png",
    "a/coffee.jpg",
    "c/corrupt.jpg",
    "c/link.jpg",
    "c/motorcycle.dat",
    "c/not_an_image.jpg",
    "c/unreadable.jpg",
    "top.jpg",
];

#[test]
fn jsonl_reports_every_file_once_in_walk_order() {
    let fx = fixture();
    let output = score(&fx.root, &["--jobs", "2"]);
    let records = jsonl(&output);
    let paths: Vec<String> = records
        .iter()
        .map(|r| rel(&fx.root, r["path"].as_str().unwrap()))
        .collect();
    assert_eq!(paths, EXPECTED_ORDER, "{}", stderr(&output));

    let by_path: BTreeMap<&str, &Value> = paths.iter().map(String::as_str).zip(&records).collect();
    let error_code = |p: &str| by_path[p]["error"]["code"].as_str().map(str::to_string);
    assert_eq!(error_code("a/b/loop").as_deref(), Some("symlink_loop"));
    assert_eq!(
        error_code("c/corrupt.jpg").as_deref(),
        Some("undecodable_image")
    );
    assert_eq!(
        error_code("c/not_an_image.jpg").as_deref(),
        Some("unsupported_format")
    );
    assert_eq!(
        error_code("c/unreadable.jpg").as_deref(),
        Some("unreadable")
    );
    for path in [
        "top.jpg",
        "a/coffee.jpg",
        "a/b/rocket.jpg",
        "a/b/tiny.png",
        "c/link.jpg",
        "c/motorcycle.dat",
    ] {
        let record = by_path[path];
        assert!(record.get("error").is_none(), "{path}: {record}");
        assert_eq!(record["model"], "efficientnet_lite0", "{path}");
        assert_eq!(record["weights"], "official", "{path}");
        assert_eq!(record["tags"].as_array().unwrap().len(), 5, "{path}");
        assert_ranked_tags(&record["tags"], 5);
    }
    assert_eq!(
        by_path["c/link.jpg"]["tags"],
        by_path["a/coffee.jpg"]["tags"]
    );
    assert_eq!(by_path["c/motorcycle.dat"]["tags"][0]["label"], "moped");
    assert_eq!(by_path["a/coffee.jpg"]["tags"][0]["label"], "espresso");
    for error in records.iter().filter_map(|r| r.get("error")) {
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }

    assert_eq!(output.status.code(), Some(1), "some files failed");
    let err = stderr(&output);
    assert!(err.contains("10 files: 6 ok, 4 failed"), "{err}");
    assert!(
        err.contains("1 non-image files skipped") && err.contains("images/s"),
        "{err}"
    );
    // No progress bar when stderr is not a terminal.
    assert!(!err.contains('\r') && !err.contains("ETA"), "{err}");
}

/// Parses RFC 4180 CSV (quoted fields, doubled quotes, line breaks inside quotes).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    assert!(
        !quoted && field.is_empty() && row.is_empty(),
        "CSV ends mid-row"
    );
    rows
}

#[test]
fn csv_has_a_header_one_row_per_tag_and_error_rows() {
    let fx = fixture();
    // A name that needs quoting.
    fs::copy(
        fixtures::path("images/rocket.jpg"),
        fx.root.join("a/b/launch, \"day\" 2.jpg"),
    )
    .unwrap();
    let output = score(&fx.root, &["--format", "csv", "--top-k", "3"]);
    let rows = parse_csv(&stdout(&output));
    assert_eq!(
        rows[0],
        [
            "path",
            "rank",
            "label",
            "class_id",
            "confidence",
            "error_code",
            "error_message"
        ]
    );
    assert!(rows.iter().all(|r| r.len() == 7), "{rows:?}");
    let mut per_path: BTreeMap<String, Vec<&Vec<String>>> = BTreeMap::new();
    for row in &rows[1..] {
        per_path
            .entry(rel(&fx.root, &row[0]))
            .or_default()
            .push(row);
    }
    let quoted = &per_path["a/b/launch, \"day\" 2.jpg"];
    assert_eq!(quoted.len(), 3);
    let coffee = &per_path["a/coffee.jpg"];
    assert_eq!(
        coffee.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(),
        ["1", "2", "3"]
    );
    assert_eq!(coffee[0][2], "espresso");
    assert!(coffee.iter().all(|r| r[3].parse::<usize>().is_ok()
        && r[4].parse::<f64>().is_ok()
        && r[5].is_empty()
        && r[6].is_empty()));
    let corrupt = &per_path["c/corrupt.jpg"];
    assert_eq!(corrupt.len(), 1);
    assert_eq!(corrupt[0][1..6], ["", "", "", "", "undecodable_image"]);
    assert!(!corrupt[0][6].is_empty());
    // The text file named .jpg has an error message with commas: quoted, still 7 fields.
    assert_eq!(per_path["c/not_an_image.jpg"][0][5], "unsupported_format");
    assert!(!per_path.contains_key("c/notes.txt"));
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn table_is_aligned_for_people() {
    let fx = fixture();
    let output = tagger()
        .args(["score", ".", "--format", "table", "--top-k", "2"])
        .current_dir(&fx.root)
        .output()
        .unwrap();
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    let header = lines[0];
    assert!(header.starts_with("PATH "), "{text}");
    let tag_at = header.find("TAG").unwrap();
    let conf_end = header.find("CONF").unwrap() + "CONF".len();
    assert_eq!(lines.len(), 1 + EXPECTED_ORDER.len(), "{text}");
    for line in &lines[1..] {
        // Every row's tag column starts under TAG, after at least two spaces.
        assert_eq!(&line[tag_at - 2..tag_at], "  ", "{line}");
        assert_ne!(&line[tag_at..tag_at + 1], " ", "{line}");
        let coffee = line.contains("coffee.jpg");
        if coffee {
            assert!(line[tag_at..].starts_with("espresso"), "{line}");
            // The confidence ends under CONF's last letter.
            assert!(line[..conf_end].ends_with('%'), "{line}");
        }
        if line.contains("corrupt.jpg") {
            assert!(
                line[tag_at..].starts_with("error: undecodable_image"),
                "{line}"
            );
        }
    }
}

#[test]
fn shards_cover_every_file_exactly_once() {
    let fx = fixture();
    let paths = |output: &Output| -> Vec<String> {
        jsonl(output)
            .iter()
            .map(|r| rel(&fx.root, r["path"].as_str().unwrap()))
            .collect()
    };
    let all = paths(&score(&fx.root, &[]));
    let mut seen = BTreeMap::<String, usize>::new();
    for index in 0..3 {
        let shard = format!("{index}/3");
        let output = score(&fx.root, &["--shard", &shard]);
        let part = paths(&output);
        // Each shard keeps the walk order.
        let mut ordered = part.clone();
        ordered.sort_by_key(|p| all.iter().position(|q| q == p));
        assert_eq!(part, ordered);
        assert!(stderr(&output).contains(&format!("shard {shard}")));
        for path in part {
            *seen.entry(path).or_default() += 1;
        }
    }
    assert_eq!(
        seen.keys().cloned().collect::<BTreeSet<_>>(),
        all.iter().cloned().collect()
    );
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    // The split depends on relative paths only: the same tree elsewhere splits the same way.
    let moved = TempDir::new("score-moved");
    let copy_root = moved.path();
    for path in ["top.jpg", "a/coffee.jpg", "a/b/rocket.jpg", "a/b/tiny.png"] {
        let to = copy_root.join(path);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(fx.root.join(path), to).unwrap();
    }
    for index in 0..3 {
        let shard = format!("{index}/3");
        let here: BTreeSet<String> = paths(&score(&fx.root, &["--shard", &shard]))
            .into_iter()
            .filter(|p| {
                ["top.jpg", "a/coffee.jpg", "a/b/rocket.jpg", "a/b/tiny.png"].contains(&p.as_str())
            })
            .collect();
        let output = score(copy_root, &["--shard", &shard]);
        let there: BTreeSet<String> = jsonl(&output)
            .iter()
            .map(|r| rel(copy_root, r["path"].as_str().unwrap()))
            .collect();
        assert_eq!(here, there, "shard {shard}");
    }
}

#[test]
fn exit_codes() {
    let dir = TempDir::new("score-good");
    dir.copy_image("chelsea.jpg", "cat.jpg");
    dir.copy_image("tiny.png", "sub/tiny.png");
    let good = dir.path();
    fs::write(good.join("sub/readme.txt"), "not an image").unwrap();
    let output = score(good, &["--jobs", "1"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(jsonl(&output).len(), 2);

    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let usage: &[Case] = &[
        (&["--bogus"], &[]),
        (&["--shard", "3/3"], &[]),
        (&["--shard", "1"], &[]),
        (&["--shard", "0/0"], &[]),
        (&["--format", "xml"], &[]),
        (&["--top-k", "0"], &[]),
        (&["--min-confidence", "2"], &[]),
        (&["--jobs", "0"], &[]),
        (&["--model", "nope"], &[]),
        (&[], &[("TAGGER_TOP_K", "abc")]),
        (&[], &[("TAGGER_TOP_K", "9")]),
        (&[], &[("TAGGER_SHARD", "5/2")]),
        (&[], &[("TAGGER_FORMAT", "yaml")]),
    ];
    for (args, env) in usage {
        let output = tagger()
            .arg("score")
            .arg(good)
            .args(*args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?} {env:?}: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?}");
        assert!(
            !stderr(&output).is_empty(),
            "{args:?}: a usage error says why"
        );
    }
    let no_paths = tagger().arg("score").output().unwrap();
    assert_eq!(no_paths.status.code(), Some(2));
    // The environment is used when no flag is given, and a flag wins over it.
    let env_csv = tagger()
        .arg("score")
        .arg(good)
        .env("TAGGER_FORMAT", "csv")
        .env("TAGGER_TOP_K", "1")
        .output()
        .unwrap();
    assert!(stdout(&env_csv).starts_with("path,rank,"));
    assert_eq!(stdout(&env_csv).lines().count(), 3);
    let flag_wins = tagger()
        .arg("score")
        .arg(good)
        .args(["--format", "jsonl"])
        .env("TAGGER_FORMAT", "csv")
        .output()
        .unwrap();
    assert_eq!(jsonl(&flag_wins).len(), 2);

    // --help documents the exit codes.
    let help = tagger().args(["score", "--help"]).output().unwrap();
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Exit codes: 0"), "{}", stdout(&help));
}

#[test]
fn no_recursive_scores_only_the_top_folder() {
    let fx = fixture();
    let output = score(&fx.root, &["--no-recursive"]);
    let paths: Vec<String> = jsonl(&output)
        .iter()
        .map(|r| rel(&fx.root, r["path"].as_str().unwrap()))
        .collect();
    assert_eq!(paths, ["top.jpg"]);
    assert_eq!(output.status.code(), Some(0));
    let env = tagger()
        .arg("score")
        .arg(&fx.root)
        .env("TAGGER_NO_RECURSIVE", "1")
        .output()
        .unwrap();
    assert_eq!(jsonl(&env).len(), 1);
}

#[test]
fn explicit_files_are_always_reported() {
    let fx = fixture();
    let output = tagger()
        .arg("score")
        .arg(fx.root.join("c/notes.txt"))
        .arg(fx.root.join("top.jpg"))
        .arg(fx.root.join("does-not-exist.jpg"))
        .output()
        .unwrap();
    let records = jsonl(&output);
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["error"]["code"], "unsupported_format");
    assert_eq!(records[1]["tags"][0]["label"], "Egyptian cat");
    assert_eq!(records[2]["error"]["code"], "not_found");
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn digits_model_reads_the_evaluation_pictures() {
    let output = tagger()
        .arg("score")
        .arg(digits_eval())
        .args(["--model", "digits", "--format", "jsonl"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let records = jsonl(&output);
    assert!(records.len() >= 300, "{}", records.len());
    // The oracle is the digit each picture was drawn as (its file name); tests/digits.rs holds
    // the model itself to scikit-learn's answers.
    let mut correct = 0;
    for record in &records {
        assert_eq!(record["model"], "digits");
        assert_eq!(record["weights"], "official");
        let digit = record["digit"].as_u64().unwrap() as usize;
        let probabilities: Vec<f64> = record["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        let path = record["path"].as_str().unwrap();
        assert_eq!(probabilities.len(), 10, "{path}");
        assert!(
            (probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-6,
            "{path}: {probabilities:?}"
        );
        assert_eq!(
            record["confidence"].as_f64().unwrap(),
            probabilities[digit],
            "{path}"
        );
        let name = Path::new(path).file_name().unwrap().to_str().unwrap();
        correct += usize::from(name[..1].parse::<usize>().unwrap() == digit);
    }
    // The default mode's accuracy on this set (tests/digits.rs holds each group to a floor).
    assert!(
        correct * 10 >= records.len() * 7,
        "{correct}/{}",
        records.len()
    );

    let csv = tagger()
        .arg("score")
        .arg(digits_eval().join("7_000.png"))
        .args(["--model", "digits", "--format", "csv"])
        .output()
        .unwrap();
    let rows = parse_csv(&stdout(&csv));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][1], "1");
    assert_eq!(rows[1][2], rows[1][3]);
}

#[test]
fn digits_preprocess_comes_from_the_flag_or_the_environment() {
    // A pen drawing and a scikit-learn picture, read with each mode: the CLI answers what the
    // library answers in that mode (and plain differs from auto on the drawing, so the choice
    // is visible).
    let eval = digits_eval();
    let files =
        [eval.join("0_000.png"), eval.join("0_072.jpg")].map(|p| p.to_str().unwrap().to_string());
    let models = tagger::Models::load_embedded(&tagger::LoadOptions::default()).unwrap();
    let library = |file: &str, mode: tagger::digits::DigitMode| {
        tagger::read_digit(
            &models,
            &fs::read(file).unwrap(),
            mode,
            &tagger::image::DecodeOptions::default(),
        )
        .unwrap()
        .probabilities
        .to_vec()
    };
    use tagger::digits::DigitMode::{Auto, Ink, Plain};
    assert_ne!(library(&files[0], Plain), library(&files[0], Auto));
    for (flag, env, mode) in [
        (None, None, Auto),
        (Some("plain"), None, Plain),
        (Some("ink"), Some("plain"), Ink),
        (None, Some("plain"), Plain),
        (Some("auto"), Some("ink"), Auto),
    ] {
        let mut command = tagger();
        command.args(["score", &files[0], &files[1], "--model", "digits"]);
        if let Some(flag) = flag {
            command.args(["--digits-preprocess", flag]);
        }
        if let Some(env) = env {
            command.env("TAGGER_DIGITS_PREPROCESS", env);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let records = jsonl(&output);
        assert_eq!(records.len(), 2);
        for (record, file) in records.iter().zip(&files) {
            let got: Vec<f64> = record["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap())
                .collect();
            let want = library(file, mode);
            assert!(
                got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-12),
                "{file}: {flag:?} {env:?}: {got:?} != {want:?}"
            );
        }
    }
    let output = tagger()
        .args(["score", &files[0], "--model", "digits"])
        .env("TAGGER_DIGITS_PREPROCESS", "fancy")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}

#[test]
fn top_k_and_min_confidence() {
    let fx = fixture();
    let output = score(&fx.root, &["--top-k", "2"]);
    let records = jsonl(&output);
    assert!(records
        .iter()
        .filter_map(|r| r.get("tags"))
        .all(|t| t.as_array().unwrap().len() == 2));
    let output = score(&fx.root, &["--min-confidence", "0.3"]);
    let records = jsonl(&output);
    let tags: Vec<f64> = records
        .iter()
        .filter_map(|r| r.get("tags"))
        .flat_map(|t| t.as_array().unwrap().clone())
        .map(|t| t["confidence"].as_f64().unwrap())
        .collect();
    assert!(
        !tags.is_empty() && tags.iter().all(|&c| c >= 0.3),
        "{tags:?}"
    );
    // Every scored file still has its record, with tags or without.
    assert_eq!(records.len(), EXPECTED_ORDER.len());
}

#[test]
fn stand_in_model_warns_once_and_marks_every_record() {
    let fx = fixture();
    let output = score(&fx.root, &["--model", "resnet18"]);
    let records = jsonl(&output);
    let scored: Vec<&Value> = records.iter().filter(|r| r.get("tags").is_some()).collect();
    assert!(!scored.is_empty());
    for record in scored {
        assert_eq!(record["weights"], "stand-in");
        assert!(record["warning"].as_str().unwrap().contains("stand-in"));
    }
    assert_eq!(
        stderr(&output).matches("stand-in weights").count(),
        1,
        "{}",
        stderr(&output)
    );
}

#[test]
fn output_file_is_written_whole() {
    let fx = fixture();
    let out_dir = TempDir::new("score-out");
    let out = out_dir.path().join("results.jsonl");
    let output = score(&fx.root, &["--output", out.to_str().unwrap()]);
    assert!(output.stdout.is_empty());
    let text = fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), EXPECTED_ORDER.len());
    let leftovers: Vec<_> = fs::read_dir(out_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        ["results.jsonl"],
        "no temporary file is left behind"
    );
    let bad = score(&fx.root, &["--output", "/nonexistent-dir/x.jsonl"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("--output"));
}

#[test]
fn a_closed_stdout_ends_the_run_quietly() {
    // ~300 records of ~400 bytes: more than a pipe buffer, so writes hit the closed pipe.
    let mut child = tagger()
        .arg("score")
        .args([digits_eval(), digits_eval()])
        .args(["--model", "digits", "--jobs", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("{\"path\""));
    // The reader is dropped here: the pipe is closed.
    let output = child.wait_with_output().unwrap();
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("panicked") && !err.to_lowercase().contains("broken pipe"),
        "{err}"
    );
}
