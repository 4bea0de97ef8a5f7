//! One line for an error and its causes, for consoles and CLI output.

/// `error: cause: cause`. A cause whose text the line already holds is
/// skipped: hyper, tonic and friends repeat their source in `Display`.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("connecting to {0}")]
    struct Outer(&'static str, #[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("transport error: {0}")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn joins_causes_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Outer("node", Middle(io));
        assert_eq!(
            super::chain(&err),
            "connecting to node: transport error: refused"
        );
    }
}
