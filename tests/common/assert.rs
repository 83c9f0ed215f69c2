//! Assertions shared by the test files, with messages that say what differed.

use serde_json::Value;

/// The largest `|a - b|` over two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A `tags` array as every surface returns it: 1..=`max` tags, confidences in 0..=1 and
/// descending, each with a label and a class id.
pub fn assert_ranked_tags(tags: &Value, max: usize) {
    let tags = tags
        .as_array()
        .unwrap_or_else(|| panic!("not a tags array: {tags}"));
    assert!(!tags.is_empty() && tags.len() <= max, "{} tags", tags.len());
    let confidences: Vec<f64> = tags
        .iter()
        .map(|t| t["confidence"].as_f64().expect("a confidence"))
        .collect();
    assert!(
        confidences.iter().all(|c| (0.0..=1.0).contains(c)),
        "{confidences:?}"
    );
    assert!(
        confidences.windows(2).all(|w| w[0] >= w[1]),
        "not descending: {confidences:?}"
    );
    assert!(
        tags.iter()
            .all(|t| t["label"].is_string() && t["class_id"].is_u64()),
        "{tags:?}"
    );
}
