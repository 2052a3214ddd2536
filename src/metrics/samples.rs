//! The exposition read back as samples: one source of truth for the admin
//! console's and `/status`' summaries, and nothing added to the hot path.

use super::Metrics;
use crate::topology::Snapshot;

/// One sample of the exposition: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, or "".
    pub fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

impl Metrics {
    /// Every sample of the exposition (what `/metrics` shows), for the
    /// console's and the status page's summaries: one source of truth, and
    /// nothing added to the hot path.
    pub fn samples(&self, snapshot: &Snapshot) -> Vec<Sample> {
        parse_samples(&self.render(snapshot))
    }
}

/// Reads Prometheus text-format samples (`name{k="v",...} value`); comment
/// lines and lines it cannot read are skipped.
pub fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name_end, mut rest) = match line.find(['{', ' ']) {
            Some(i) => (i, &line[i..]),
            None => continue,
        };
        let mut labels = Vec::new();
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut key = String::new();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '}' => {
                        end = Some(i + 1);
                        break;
                    }
                    ',' | ' ' => {}
                    '=' => {
                        // A quoted value with \, \" and \n escapes.
                        let mut value = String::new();
                        if !matches!(chars.next(), Some((_, '"'))) {
                            break;
                        }
                        while let Some((_, c)) = chars.next() {
                            match c {
                                '\\' => match chars.next() {
                                    Some((_, 'n')) => value.push('\n'),
                                    Some((_, other)) => value.push(other),
                                    None => {}
                                },
                                '"' => break,
                                other => value.push(other),
                            }
                        }
                        labels.push((std::mem::take(&mut key), value));
                    }
                    other => key.push(other),
                }
            }
            let Some(end) = end else { continue };
            rest = &body[end..];
        }
        let Some(value) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) else {
            continue;
        };
        out.push(Sample {
            name: line[..name_end].to_owned(),
            labels,
            value,
        });
    }
    out
}
