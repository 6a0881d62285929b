//! The MCP server handler: `tools/list` shows the tools the key's scopes allow, `tools/call`
//! runs one through the API (see `tools`).

use std::sync::Arc;

use axum::{Router, http::request::Parts};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult, PaginatedRequestParams,
        ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
};

use super::{
    api_call::Api,
    tools::{Catalog, Progress},
};
use crate::http::auth::AuthContext;

const INSTRUCTIONS: &str = "rdev-api runs shell commands in development environments (projects). \
list_projects names them; run_command runs a command and answers its exit code and output \
(the head and tail of a long one); queue_command runs one in the background, followed with \
get_command. Files are read, written and deleted without shell quoting; write_file and \
delete_file take the etag read_file gave as if_match, so a change someone made since is not \
overwritten. A session keeps the folder and the variables from one run_in_session to the next.";

#[derive(Clone)]
pub struct McpServer {
    api: Router,
    catalog: Arc<Catalog>,
}

impl McpServer {
    pub fn new(api: Router, catalog: Arc<Catalog>) -> Self {
        Self { api, catalog }
    }
}

/// The `/mcp` request this message came in (the SDK keeps its parts).
fn parts_of(context: &RequestContext<RoleServer>) -> Result<&Parts, ErrorData> {
    context.extensions.get::<Parts>().ok_or_else(|| ErrorData::internal_error("no HTTP request", None))
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("rdev-api", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let auth = parts_of(&context)?
            .extensions
            .get::<AuthContext>()
            .ok_or_else(|| ErrorData::internal_error("not authenticated", None))?;
        Ok(ListToolsResult::with_all_items(self.catalog.allowed(&auth.key)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(tool) = self.catalog.find(&request.name) else {
            return Err(ErrorData::invalid_params(format!("no tool is named {:?}", request.name), None));
        };
        let progress = context.meta.get_progress_token().map(|token| Progress::new(context.peer.clone(), token));
        let api = Api { router: &self.api, outer: parts_of(&context)? };
        let arguments = request.arguments.unwrap_or_default();
        Ok(super::tools::call(tool, api, arguments, progress).await.into())
    }
}
