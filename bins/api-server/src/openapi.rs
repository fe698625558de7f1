//! `GET /api/openapi.json`: the API description, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{generation, health, jobs, lifecycle, logs, projects, wire};
use crate::sse;

#[derive(OpenApi)]
#[openapi(
    info(title = "Slipway API", description = "Start, follow and manage app builds."),
    paths(
        generation::start,
        generation::status,
        generation::cancel,
        generation::preview_check,
        lifecycle::resume,
        lifecycle::snapshot,
        sse::events,
        jobs::submit,
        jobs::get,
        projects::create,
        projects::list,
        projects::get,
        projects::delete,
        logs::history,
        logs::stream,
        health::healthz,
        health::readyz,
        health::metrics,
    ),
    components(schemas(
        wire::StartRequest,
        wire::StartGenerationResponse,
        wire::GenerationStatusResponse,
        wire::CancelResponse,
        wire::PreviewCheckResponse,
        wire::ResumeResponse,
        wire::SnapshotResponse,
        wire::SubmitJobResponse,
        wire::JobStatusResponse,
        wire::SandboxSecondsResponse,
        wire::UsageResponse,
        wire::CreateProjectRequest,
        wire::ProjectResponse,
        wire::DeletedResponse,
        logs::LogLineResponse,
        logs::LogPageResponse,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
