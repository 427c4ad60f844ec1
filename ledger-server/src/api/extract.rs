//! The API's own `Query` and `Path` extractors: axum's answer a malformed query string or
//! path with `text/plain`; these answer problem+json naming the parameter, like every other
//! error. And the guard that refuses NUL characters (PostgreSQL stores none) in a request's
//! path and query before any handler sees them.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// `?a=1&b=2` as `T`; a value that does not parse is a 400 naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(AppError::bad_request("query", rejection.body_text())),
        }
    }
}

/// The path's parameters as `T`; one that does not parse is a 400 naming it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(AppError::bad_request("path", rejection.body_text())),
        }
    }
}

/// Refuses a request whose path or query string holds a NUL character (`%00`): no column
/// or JSON value of PostgreSQL can store one, and it would fail deep in a handler. A body's
/// NULs are found where it is parsed ([`super::Command::json`]).
pub async fn refuse_nul(request: Request, next: Next) -> Response {
    let uri = request.uri();
    for (part, text) in [("path", Some(uri.path())), ("query", uri.query())] {
        if let Some(text) = text
            && percent_decodes_to_nul(text)
        {
            return AppError::bad_request(part, "contains a NUL character (%00), which the ledger cannot store")
                .into_response();
        }
    }
    next.run(request).await
}

fn percent_decodes_to_nul(text: &str) -> bool {
    text.as_bytes().windows(3).any(|window| window == b"%00") || text.contains('\0')
}

/// Writes every number of `value` that is a whole float (`7.0`, `1e2`) within the range
/// where floats hold integers exactly (±2^53) as that integer; true when one was. Amounts
/// are strings, so none of them is touched.
pub fn integral_floats_as_integers(value: &mut serde_json::Value) -> bool {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        serde_json::Value::Number(number) => match number.as_f64() {
            Some(float) if number.is_f64() && float.fract() == 0.0 && float.abs() <= EXACT => {
                *number = serde_json::Number::from(float as i64);
                true
            }
            _ => false,
        },
        serde_json::Value::Array(items) => {
            items.iter_mut().map(integral_floats_as_integers).fold(false, |changed, one| changed | one)
        }
        serde_json::Value::Object(fields) => {
            fields.values_mut().map(integral_floats_as_integers).fold(false, |changed, one| changed | one)
        }
        _ => false,
    }
}

/// The JSON path (`personal.full_name`, `items[2]`) of the first string or key in `value`
/// that holds a NUL character.
pub fn nul_in(value: &serde_json::Value, at: &str) -> Option<String> {
    let join = |name: &str| if at.is_empty() { name.to_owned() } else { format!("{at}.{name}") };
    match value {
        serde_json::Value::String(text) if text.contains('\0') => Some(at.to_owned()),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(index, item)| nul_in(item, &format!("{at}[{index}]")))
        }
        serde_json::Value::Object(fields) => fields.iter().find_map(|(name, field)| {
            if name.contains('\0') { Some(join(&name.replace('\0', "\\u0000"))) } else { nul_in(field, &join(name)) }
        }),
        _ => None,
    }
}
