//! The `Incoming` extractor: a GraphQL request read from the query string (GET) or a bounded
//! JSON body (POST), with the request's ids. A malformed request is logged by category only:
//! a parser's message can quote the offending value, and a query string or body can hold a
//! patient's name.

use async_graphql_axum::GraphQLRequest;
use async_graphql_axum::rejection::GraphQLRejection;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::OperationLabel;
use crate::db::RequestIds;
use crate::error::{ApiError, ErrorCode};
use crate::graphql::documents::loggable_name;
use crate::routes::request_ids::{self, CorrelationId};
use crate::state::AppState;

/// A GraphQL request as it arrived.
#[derive(Debug)]
pub struct Incoming {
    pub request: async_graphql::Request,
    /// GET requests may only read.
    pub over_get: bool,
    pub ids: RequestIds,
    /// The operation name if it is loggable (see [`loggable_name`]), else `<invalid>`, or
    /// `<anonymous>` when there is none.
    pub name: String,
}

/// A request that is not a GraphQL request; counted under the `<invalid>` operation label.
#[derive(Debug)]
pub struct Malformed(pub ApiError);

impl IntoResponse for Malformed {
    fn into_response(self) -> Response {
        let mut response = self.0.into_response();
        response
            .extensions_mut()
            .insert(OperationLabel(INVALID.to_owned()));
        response
    }
}

const INVALID: &str = "<invalid>";

impl FromRequest<AppState> for Incoming {
    type Rejection = Malformed;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Malformed> {
        let over_get = request.method() == Method::GET;
        let ids = RequestIds {
            request_id: request_ids::of(&request),
            correlation_id: request
                .extensions()
                .get::<CorrelationId>()
                .and_then(|c| c.0.clone()),
            trace_id: crate::telemetry::trace_id(&tracing::Span::current()),
        };
        let request = read(request, &state.limits).await.map_err(Malformed)?;
        let given = request.operation_name.as_deref();
        let name = match loggable_name(given) {
            Some(name) => name,
            None if given.is_some() => INVALID,
            None => "<anonymous>",
        }
        .to_owned();
        Ok(Self {
            request,
            over_get,
            ids,
            name,
        })
    }
}

/// The codings a header's lines list, in order (RFC 9110 §5.3: repeated lines are one
/// comma-separated list; §5.6.1: empty elements do not count).
fn codings(
    lines: axum::http::header::GetAll<'_, axum::http::HeaderValue>,
) -> impl Iterator<Item = &[u8]> {
    lines
        .into_iter()
        .flat_map(|line| line.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|coding| !coding.is_empty())
}

async fn read(
    request: Request,
    limits: &crate::settings::ApiLimits,
) -> Result<async_graphql::Request, ApiError> {
    let (max_body_bytes, timeout) = (limits.max_body_bytes, limits.request_timeout);
    let max_values = limits.max_request_json_values();
    let (parts, body) = request.into_parts();
    let body = if parts.method == Method::POST {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let mut params = content_type.split(';');
        let media_type = params.next().unwrap_or_default().trim();
        // JSON is UTF-8 (RFC 8259); a body declared in another charset, or compressed, would
        // be read as something it is not.
        let other_charset = params.any(|param| {
            param.split_once('=').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("charset")
                    && !value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        });
        // Every line counts: a proxy or firewall that joins repeated lines (RFC 9110 §5.3)
        // reads `identity` then `gzip` as a gzipped body, and two types as neither.
        let encoded = codings(parts.headers.get_all(header::CONTENT_ENCODING))
            .any(|coding| !coding.eq_ignore_ascii_case(b"identity"));
        let types = parts.headers.get_all(header::CONTENT_TYPE).iter().count();
        if !media_type.eq_ignore_ascii_case("application/json")
            || types > 1
            || other_charset
            || encoded
        {
            return Err(ApiError::new(
                ErrorCode::BadUserInput,
                "send the GraphQL request as Content-Type: application/json (UTF-8, not compressed)",
            )
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        // The server undoes `chunked` once; a body also sent in another transfer coding
        // (`gzip, chunked`), or chunked twice, would be read still encoded (RFC 9112 §6.1:
        // 501).
        let mut transfer = codings(parts.headers.get_all(header::TRANSFER_ENCODING));
        let transfer_coded = match transfer.next() {
            None => false,
            Some(first) => !first.eq_ignore_ascii_case(b"chunked") || transfer.next().is_some(),
        };
        if transfer_coded {
            return Err(ApiError::new(
                ErrorCode::BadUserInput,
                "no transfer coding but chunked is understood",
            )
            .with_status(StatusCode::NOT_IMPLEMENTED));
        }
        // Refused before the body is read, so a client that asked `Expect: 100-continue` is
        // told at once instead of being invited to send it.
        let announced = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|length| length > max_body_bytes as u64) {
            return Err(ApiError::new(
                ErrorCode::BadUserInput,
                format!("the request body is larger than {max_body_bytes} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE));
        }
        // The body arrives within the request's own time limit: a client sending a few bytes
        // at a time (or fewer than it announced) must not hold the connection and a request
        // slot for ever.
        let bytes = match tokio::time::timeout(timeout, to_bytes(body, max_body_bytes)).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) if is_over_limit(&error) => {
                return Err(ApiError::new(
                    ErrorCode::BadUserInput,
                    format!("the request body is larger than {max_body_bytes} bytes"),
                )
                .with_status(StatusCode::PAYLOAD_TOO_LARGE));
            }
            Ok(Err(_)) => {
                return Err(ApiError::new(
                    ErrorCode::BadUserInput,
                    "the request body broke off or is malformed",
                )
                .with_status(StatusCode::BAD_REQUEST));
            }
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::BadUserInput,
                    "the request body did not arrive within the request timeout",
                )
                .with_status(StatusCode::REQUEST_TIMEOUT));
            }
        };
        if more_json_values_than(&bytes, max_values) {
            return Err(too_many_values(max_values));
        }
        Body::from(bytes)
    } else {
        Body::empty()
    };
    let over_get = parts.method == Method::GET;
    if over_get {
        return from_query_string(parts.uri.query().unwrap_or_default(), max_values).map_err(
            |refused| {
                if let Some(refused) = refused {
                    return refused;
                }
                tracing::info!(
                    reason = "query string is not a GraphQL request",
                    "malformed GraphQL request"
                );
                ApiError::new(
                    ErrorCode::BadUserInput,
                    "the request is not a valid GraphQL request",
                )
            },
        );
    }
    GraphQLRequest::<GraphQLRejection>::from_request(Request::from_parts(parts, body), &())
        .await
        .map(GraphQLRequest::into_inner)
        .map_err(|rejection| {
            tracing::info!(
                reason = rejection_category(&rejection.0),
                "malformed GraphQL request"
            );
            ApiError::new(
                ErrorCode::BadUserInput,
                "the request is not a valid GraphQL request",
            )
        })
}

/// A GET request's parameters, named as GraphQL over HTTP and Apollo Client name them
/// (`operationName`; the engine's own reader knows only `operation_name`, and would run a
/// document's first operation and record no name in the audit trail). Either spelling is
/// accepted, both at once are refused, as is any parameter given twice.
#[derive(serde::Deserialize)]
struct QueryString {
    #[serde(default)]
    query: String,
    #[serde(rename = "operationName", alias = "operation_name")]
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// A GET request's GraphQL request; `Err(None)` when it is not one, `Err(Some(_))` when it is
/// refused for its size.
fn from_query_string(
    query_string: &str,
    max_values: usize,
) -> Result<async_graphql::Request, Option<ApiError>> {
    let given: QueryString = serde_urlencoded::from_str(query_string).map_err(|_| None)?;
    let mut request = async_graphql::Request::new(given.query);
    request.operation_name = given.operation_name;
    // One budget for both parameters, as for a body.
    let values = |given: &Option<String>| {
        json_values(given.as_deref().unwrap_or_default().as_bytes(), max_values)
    };
    if values(&given.variables).saturating_add(values(&given.extensions)) > max_values {
        return Err(Some(too_many_values(max_values)));
    }
    if let Some(variables) = given.variables {
        request.variables = serde_json::from_str(&variables).map_err(|_| None)?;
    }
    if let Some(extensions) = given.extensions {
        request.extensions = serde_json::from_str(&extensions).map_err(|_| None)?;
    }
    Ok(request)
}

/// Whether the JSON text holds more than `limit` values (see [`json_values`]).
fn more_json_values_than(text: &[u8], limit: usize) -> bool {
    json_values(text, limit) > limit
}

/// How many values the JSON text holds, counted from its punctuation alone (each array and
/// object, and each `,` outside strings) before anything is built from it; counting stops one
/// past `limit`. Built, each small value takes tens of bytes: a 1 MiB body of `[1,1,…]` held
/// 44 MB, and an operation is checked only for the variables it uses, after they are all built.
fn json_values(text: &[u8], limit: usize) -> usize {
    let (mut count, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in text {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' | b',' => {
                count += 1;
                if count > limit {
                    return count;
                }
            }
            _ => {}
        }
    }
    count
}

fn too_many_values(limit: usize) -> ApiError {
    ApiError::new(
        ErrorCode::BadUserInput,
        format!(
            "the request holds more than {limit} JSON values (variables and extensions together)"
        ),
    )
}

/// What kind of malformed request this was, in words that carry nothing of the request.
fn rejection_category(error: &async_graphql::ParseRequestError) -> &'static str {
    use async_graphql::ParseRequestError as E;
    match error {
        E::Io(_) => "body could not be read",
        E::InvalidRequest(_) => "body is not a GraphQL request",
        E::PayloadTooLarge => "body too large",
        E::UnsupportedBatch => "batch requests are not supported",
        _ => "unsupported request encoding",
    }
}

/// Whether reading a body failed because it passed the size limit (rather than broke off).
fn is_over_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::more_json_values_than;

    #[test]
    fn values_are_counted_from_punctuation_outside_strings() {
        let body = br#"{"query":"{ a, b, [c] }","variables":{"x":[1,2,3],"y":"a,b\",["}}"#;
        // The object, `variables`, `x`'s list, and the commas between values.
        assert!(!more_json_values_than(body, 8));
        assert!(more_json_values_than(body, 6));
    }

    #[test]
    fn an_escaped_backslash_ends_before_the_closing_quote() {
        assert!(!more_json_values_than(br#"["a\\",1]"#, 2));
        assert!(more_json_values_than(br#"["a\\",1]"#, 1));
    }
}
