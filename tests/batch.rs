//! Several images in one `/v1` multipart request against the real binary: results in order,
//! one bad image fails only its entry, a single image keeps today's answer, `--max-batch`.

mod common;

use common::{image, multipart, Server};

#[test]
fn several_images_answer_in_order_and_fail_alone() {
    let server = Server::ready(&[]);
    let (cat, coffee, junk) = (
        image("chelsea.jpg"),
        image("coffee.jpg"),
        image("not_an_image.jpg"),
    );
    let (ct, body) = multipart(&[
        ("image", Some("cat.jpg"), &cat),
        ("image", Some("junk.jpg"), &junk),
        ("note", None, b"ignored"),
        ("image", Some("coffee.jpg"), &coffee),
    ]);
    let r = server.post("/v1/tags?top_k=1", &ct, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 3);
    assert!([281, 282, 285].contains(&results[0]["tags"][0]["class_id"].as_u64().unwrap()));
    assert_eq!(results[1]["error"]["code"], "unsupported_format");
    assert_eq!(results[2]["tags"][0]["class_id"], 967);
    // Each entry is exactly the single-image answer (timings aside).
    let single = server.post("/v1/tags?top_k=1", "image/jpeg", &cat).json();
    assert_eq!(results[0]["tags"], single["tags"]);

    // One file: today's answer, no `results`.
    let (ct, body) = multipart(&[("image", Some("cat.jpg"), &cat)]);
    let v = server.post("/v1/tags", &ct, &body).json();
    assert!(v.get("results").is_none() && v["tags"].is_array(), "{v}");

    // Digits, and file parts under any name when no field is called `image`.
    let digit = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/images/digit.png"
    ))
    .unwrap();
    let (ct, body) = multipart(&[("a", Some("7.png"), &digit), ("b", Some("7b.png"), &digit)]);
    let v = server.post("/v1/digits", &ct, &body).json();
    let digits: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["digit"].as_u64().unwrap())
        .collect();
    assert_eq!(digits, [7, 7]);
    let v = server.post("/v1/models/digits/predict", &ct, &body).json();
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
}

#[test]
fn max_batch_from_flag_and_environment() {
    let cat = image("chelsea.jpg");
    let three = vec![("image", Some("c.jpg"), cat.as_slice()); 3];
    let (ct, body) = multipart(&three);
    let server = Server::ready(&["--max-batch", "2"]);
    let r = server.post("/v1/tags", &ct, &body);
    assert_eq!((r.status, r.code()), (413, "too_many_images".to_string()));
    assert!(r.text().contains("limit is 2"), "{}", r.text());
    let (ct2, body2) = multipart(&three[..2]);
    assert_eq!(server.post("/v1/tags", &ct2, &body2).status, 200);
    drop(server);
    let server = Server::ready_with_env(&[], &[("TAGGER_MAX_BATCH", "1")]);
    assert_eq!(server.post("/v1/tags", &ct2, &body2).status, 413);
    drop(server);
    let mut bad = std::process::Command::new(env!("CARGO_BIN_EXE_tagger"))
        .args(["serve", "--max-batch", "0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(bad.wait().unwrap().code(), Some(2));
}
