//! An error and its causes on one line, as both binaries print their
//! errors and the agent sends them over its control socket.

use std::error::Error;

/// `e` and its causes joined with `: `, leaving out a cause the message
/// already contains.
pub fn one_line(e: &(dyn Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !out.contains(&c_text) {
            out.push_str(": ");
            out.push_str(&c_text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{msg}")]
    struct E {
        msg: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    #[test]
    fn causes_are_joined_and_a_repeated_one_is_left_out() {
        let inner = E {
            msg: "disk full",
            source: None,
        };
        let mid = E {
            msg: "cannot write x: disk full",
            source: Some(Box::new(inner)),
        };
        let top = E {
            msg: "saving",
            source: Some(Box::new(mid)),
        };
        assert_eq!(one_line(&top), "saving: cannot write x: disk full");
    }
}
