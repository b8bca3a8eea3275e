//! What the apiserver's error answers mean, for the questions more than one module asks.

/// Whether the apiserver answered 404: the object is gone, or (for a collection, or a subresource)
/// what was asked for is not served.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn only_a_404_answer_is_not_found() {
        let answer =
            |code| kube::Error::Api(Status::failure("x", "NotFound").with_code(code).boxed());
        assert!(is_not_found(&answer(404)));
        assert!(!is_not_found(&answer(403)));
        assert!(!is_not_found(&kube::Error::LinesCodecMaxLineLengthExceeded));
    }
}
