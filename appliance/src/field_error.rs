//! The one error shape for bad input: which field, and what to do about it.
//!
//! The API turns it into a 400 with `field` set; the pages show the message
//! beside the field.

/// An input value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The name of the field as the client sent it.
    pub field: &'static str,
    /// What is wrong and how to fix it, in words for the owner.
    pub message: String,
}

impl FieldError {
    /// A refusal of `field` with a message that says the fix.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
