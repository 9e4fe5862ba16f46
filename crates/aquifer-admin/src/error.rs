//! Errors as JSON: a stable `code` and a message that says what to do.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::source::ControlError;

/// An API error: `{"error": {"code": "...", "message": "..."}}` with its
/// HTTP status.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    status: StatusCode,
    /// Stable, for programs: `unauthorized`, `forbidden`, `not_found`,
    /// `bad_selector`, `bad_value`, `unsupported`, `shut_down`.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this change needs the admin token: send `Authorization: Bearer <token>`",
        )
    }

    pub(crate) fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the bearer token is wrong: use the token the server printed at start or was configured with",
        )
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn bad_value(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_value", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NoMatch(sel) => Self::not_found(format!(
                "no pool matches `{sel}`: GET /api/pools lists them"
            )),
            ControlError::Invalid(why) => Self::new(StatusCode::BAD_REQUEST, "bad_value", why),
            ControlError::Unsupported(why) => Self::new(StatusCode::CONFLICT, "unsupported", why),
            ControlError::ShutDown => Self::new(
                StatusCode::CONFLICT,
                "shut_down",
                "the cluster was shut down and takes no more changes",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a ApiError,
        }
        let mut res = (self.status, Json(Body { error: &self })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"aquifer-admin\""),
            );
        }
        res
    }
}
