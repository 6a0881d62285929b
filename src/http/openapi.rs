//! The parts of the OpenAPI document that no handler declares: title, contact, servers, tags,
//! the auth scheme, the error schema, and what every error response of a kind says (its
//! description, `Retry-After` on 429 and 503, the rate-limit headers). The paths come from the
//! handlers' `#[utoipa::path]` attributes. `openapi-spec-validator` and spectral's `spectral:oas`
//! rules check the result in CI.

use utoipa::{
    Modify, OpenApi,
    openapi::{
        Object, RefOr, Type,
        header::Header,
        path::Operation,
        response::Response,
        security::{ApiKey, ApiKeyValue, SecurityScheme},
    },
};

use super::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "rdev-api",
        description = "Run shell commands in development environments over HTTP. The contract is docs/api.md.\n\n\
            `POST /mcp` serves the same API as a remote MCP server (Streamable HTTP, stateless) for \
            coding agents: the key as `Authorization: Bearer` or `X-API-Key`; tools list_projects, \
            run_command, queue_command, get_command, cancel_command, list_files, read_file, write_file, \
            delete_file, create_session and run_in_session, each the route of the same name with its scope \
            (see docs/api.md, \"MCP server for coding agents\").",
        contact(name = "rdev-api maintainers")
    ),
    servers((url = "/", description = "This server")),
    tags(
        (name = "projects", description = "Development environments: folders of the local executor, or labelled pods."),
        (name = "commands", description = "Running commands now (`/shell`), and queued for the workers of every replica."),
        (name = "files", description = "A project's files: list, read, write and delete, contained where the executor keeps them."),
        (name = "sessions", description = "Shell state (folder, variables) kept from one command to the next, on every replica."),
        (name = "terminal", description = "An interactive shell on a pseudo-terminal, over a WebSocket; tickets for browsers."),
        (name = "api-keys", description = "Hashed, scoped, expiring API keys with address allowlists and rotation."),
        (name = "audit", description = "Every execution and every refused attempt to execute."),
        (name = "webhooks", description = "Signed notifications of finished commands, with delivery tracking."),
        (name = "health", description = "Liveness, readiness and metrics, for probes and Prometheus."),
    ),
    modifiers(&ApiKeyAuth),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

struct ApiKeyAuth;

impl Modify for ApiKeyAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
    }
}

/// What every response of a status says unless its handler says more: a description (which
/// the OpenAPI schema requires of every response), `Retry-After` on 429 and 503, and the rate
/// limit headers on every response of an authenticated operation.
struct StandardResponses;

impl Modify for StandardResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                describe(operation);
            }
        }
    }
}

fn describe(operation: &mut Operation) {
    let authenticated = operation.security.as_ref().is_some_and(|s| !s.is_empty());
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        if response.description.is_empty() {
            response.description = standard_description(status).to_owned();
        }
        if matches!(status.as_str(), "429" | "503") {
            add_header(response, "Retry-After", "Seconds to wait before trying again.");
        }
        if authenticated && status != "401" {
            add_header(response, "RateLimit-Limit", "Requests the key may make per window.");
            add_header(response, "RateLimit-Remaining", "Requests left in the current window.");
            add_header(response, "RateLimit-Reset", "Seconds until the oldest request leaves the window.");
        }
    }
}

fn add_header(response: &mut Response, name: &str, description: &str) {
    let mut header = Header::new(Object::with_type(Type::Integer));
    header.description = Some(description.to_owned());
    response.headers.entry(name.to_owned()).or_insert(RefOr::T(header));
}

fn standard_description(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        "204" => "Done; no content",
        "400" => {
            "Malformed request (`BAD_REQUEST`) or invalid fields (`VALIDATION_FAILED`, `details.fields` names each)"
        }
        "401" => "Missing, unknown, revoked or expired API key",
        "403" => "The key lacks the scope, or the client address is outside its allowlist",
        "404" => "Not found",
        "409" => "In conflict with the resource's current state",
        "413" => "The request body is larger than the limit",
        "429" => "The key's rate limit is used up",
        "503" => "The executor (`EXECUTOR_UNAVAILABLE`) or the database (`UNAVAILABLE`) cannot serve this now",
        _ => "See the error body",
    }
}

/// The document before the handlers' paths are merged in.
pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document once every path is in.
pub fn complete(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    StandardResponses.modify(&mut api);
    api
}
