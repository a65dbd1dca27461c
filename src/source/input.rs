//! How every command names where its events come from: `file:PATH`, `PATH`, `-` (standard
//! input) and, for commands that read topics, `kafka://HOST:PORT/TOPIC`. `run`, `eval`, `bench`
//! and `produce` all parse `--input` here, so they take the same forms and refuse the same way.

use std::path::PathBuf;

use thiserror::Error;

use crate::spec::kafka_address::{KafkaAddress, SCHEME};

/// Where events come from, as `--input` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputAddress {
    /// A file: `file:PATH` or `PATH`.
    File(PathBuf),
    /// Standard input: `-`.
    Stdin,
    /// A Kafka topic: `kafka://HOST:PORT/TOPIC`.
    Kafka(KafkaAddress),
}

/// Which forms a command reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputForms {
    /// Files and standard input.
    Files,
    /// Files, standard input and Kafka topics.
    FilesOrKafka,
}

impl std::fmt::Display for InputForms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputForms::Files => write!(f, "file:PATH, PATH or - (standard input)"),
            InputForms::FilesOrKafka => write!(f, "file:PATH, PATH, - (standard input) or {SCHEME}HOST:PORT/TOPIC"),
        }
    }
}

/// An input that names nothing the command reads.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("`{text}` {problem}; this command reads {forms}")]
pub struct InputError {
    /// The input as given.
    pub text: String,
    /// What is wrong with it.
    pub problem: String,
    /// What the command reads.
    pub forms: InputForms,
}

impl InputAddress {
    /// Parses an input for a command that reads `forms`. A leading `NAME:` other than `file:` and
    /// `kafka:` is an unknown scheme (write `file:a:b.csv` or `./a:b.csv` for a file whose name
    /// has a colon).
    pub fn parse(text: &str, forms: InputForms) -> Result<InputAddress, InputError> {
        let refuse = |problem: String| InputError { text: text.to_string(), problem, forms };
        if text == "-" {
            return Ok(InputAddress::Stdin);
        }
        if text.trim().is_empty() {
            return Err(refuse("names no input".into()));
        }
        match scheme(text) {
            None => Ok(InputAddress::File(PathBuf::from(text))),
            Some(("file", rest)) => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    Err(refuse("names no file".into()))
                } else {
                    Ok(InputAddress::File(PathBuf::from(path)))
                }
            }
            Some(("kafka", _)) if forms == InputForms::FilesOrKafka => {
                KafkaAddress::parse(text).map(InputAddress::Kafka).map_err(refuse)
            }
            Some(("kafka", _)) => Err(refuse("is a Kafka topic, which this command does not read".into())),
            Some((scheme, rest)) if rest.starts_with("//") => {
                Err(refuse(format!("has the unknown scheme `{scheme}:`")))
            }
            Some((scheme, _)) => Err(refuse(format!(
                "has the unknown scheme `{scheme}:` (for a file whose name has a colon, write file:{text})"
            ))),
        }
    }

    /// The path a file source opens for this input (`-` for standard input); `None` for Kafka.
    pub fn path(&self) -> Option<PathBuf> {
        match self {
            InputAddress::File(path) => Some(path.clone()),
            InputAddress::Stdin => Some(PathBuf::from("-")),
            InputAddress::Kafka(_) => None,
        }
    }
}

/// The scheme of `text` and what follows its colon, if `text` starts with one: a letter, then at
/// least one more letter, digit, `+`, `.` or `-`, then `:`.
fn scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once(':')?;
    let mut chars = scheme.chars();
    let starts = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let is_scheme = starts && scheme.len() >= 2 && chars.all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c));
    is_scheme.then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<InputAddress, InputError> {
        InputAddress::parse(text, InputForms::FilesOrKafka)
    }

    fn file(path: &str) -> Result<InputAddress, InputError> {
        Ok(InputAddress::File(PathBuf::from(path)))
    }

    #[test]
    fn files_stdin_and_topics_parse() {
        assert_eq!(parse("events.csv"), file("events.csv"));
        assert_eq!(parse("file:events.csv"), file("events.csv"));
        assert_eq!(parse("file:///tmp/events.csv"), file("/tmp/events.csv"));
        assert_eq!(parse("./a:b.csv"), file("./a:b.csv"));
        assert_eq!(parse("file:a:b.csv"), file("a:b.csv"));
        assert_eq!(parse("/data/x.tsv"), file("/data/x.tsv"));
        assert_eq!(parse("-"), Ok(InputAddress::Stdin));
        let topic = KafkaAddress { brokers: "h:9092".into(), topic: "events".into() };
        assert_eq!(parse("kafka://h:9092/events"), Ok(InputAddress::Kafka(topic)));
    }

    #[test]
    fn mistakes_name_the_accepted_forms() {
        let s3 = parse("s3://bucket/events.csv").unwrap_err().to_string();
        assert!(s3.contains("unknown scheme `s3:`") && s3.contains("file:PATH, PATH, - (standard input) or kafka://"));
        assert!(parse("file:").unwrap_err().to_string().contains("names no file"));
        assert!(parse("fil:events.csv").unwrap_err().to_string().contains("write file:fil:events.csv"));
        assert!(parse("kafka://h:9092").unwrap_err().to_string().contains("names no topic"));
        let eval = InputAddress::parse("kafka://h:9092/events", InputForms::Files).unwrap_err().to_string();
        assert!(eval.contains("does not read") && eval.ends_with("file:PATH, PATH or - (standard input)"), "{eval}");
    }
}
