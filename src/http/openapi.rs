//! The parts of the OpenAPI document that no handler declares: title, auth scheme, error schema.
//! The paths come from the handlers' `#[utoipa::path]` attributes.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, SecurityScheme},
};

use super::error::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(title = "rdev-api", description = "Run shell commands in development environments over HTTP."),
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

pub fn base() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
