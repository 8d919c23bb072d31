//! The smallest gateway: an axum router behind `ModelRoutingLayer`. The
//! layer reads the body's `model` and sets `X-Gateway-Model-Name`; the
//! handler routes by that header alone, as an HTTPRoute would, and the body
//! arrives unchanged.
//!
//! ```sh
//! cargo run -p bbr-axum-example --example minimal
//! curl -s localhost:8080/v1/chat/completions -d '{"model":"food-review-1","messages":[]}'
//! ```

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bbr_core::contract::{ApiError, ErrorType, JSON_CONTENT_TYPE, MODEL_HEADER};
use bbr_tower::ModelRoutingLayer;
use http::{HeaderMap, StatusCode, header};

/// The router: two "pools", chosen by the header the layer sets.
fn app() -> Router {
    Router::new()
        .route("/v1/chat/completions", post(by_model))
        .route("/v1/completions", post(by_model))
        .layer(ModelRoutingLayer::new())
}

async fn by_model(headers: HeaderMap, body: Body) -> Response {
    let model = headers.get(MODEL_HEADER).and_then(|v| v.to_str().ok());
    let pool = match model {
        Some("meta-llama/Llama-3.1-8B-Instruct" | "food-review-1") => "vllm-llama3-8b-instruct",
        Some("deepseek/vllm-deepseek-r1" | "ski-resorts" | "movie-critique") => "vllm-deepseek-r1",
        _ => return no_route(model.unwrap_or_default()),
    };
    // A real gateway would proxy here; this one echoes what the pool would get.
    match to_bytes(body, 1 << 20).await {
        Ok(bytes) => format!("{pool} got {} bytes", bytes.len()).into_response(),
        // The layer ended the body with its typed error (say, a duplicate `model`).
        Err(error) => (StatusCode::BAD_REQUEST, error.to_string()).into_response(),
    }
}

/// 404 in the contract's OpenAI shape.
fn no_route(model: &str) -> Response {
    let error = ApiError::new(
        404,
        ErrorType::InvalidRequest,
        "model_not_found",
        format!("The model `{model}` does not exist."),
    )
    .with_param("model");
    let headers = [(header::CONTENT_TYPE, JSON_CONTENT_TYPE)];
    (StatusCode::NOT_FOUND, headers, error.json_body()).into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use tower::ServiceExt;

    async fn call(body: &'static str) -> (StatusCode, String) {
        let request = Request::post("/v1/chat/completions")
            // A client cannot pick the route: its header is replaced.
            .header(MODEL_HEADER, "ski-resorts")
            .body(Body::from(body))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn routes_by_the_body_model() {
        let body = r#"{"model":"food-review-1","messages":[{"role":"user","content":"hi"}]}"#;
        let (status, text) = call(body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            text,
            format!("vllm-llama3-8b-instruct got {} bytes", body.len())
        );
        let (_, text) = call(r#"{"model":"movie-critique"}"#).await;
        assert!(text.starts_with("vllm-deepseek-r1 "), "{text}");
    }

    #[tokio::test]
    async fn unknown_and_invalid_models_get_openai_errors() {
        let (status, text) = call(r#"{"model":"gpt-9"}"#).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(text.contains(r#""code":"model_not_found""#), "{text}");
        // The layer answers bad bodies itself, before the router runs.
        let (status, text) = call(r#"{"model":""}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(text.contains(r#""code":"invalid_model""#), "{text}");
    }
}
