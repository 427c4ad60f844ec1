//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations and the
//! request and response types. `GET /openapi.json` serves it; `docs/openapi.json` is a copy
//! that a test keeps equal (`payroll-ledger openapi > docs/openapi.json` writes it anew).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    audit, employees, notifications, organization, payroll, payslips, privacy, schedules, system, transparency, wallets,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "payroll-ledger",
        description = "An event-sourced payroll ledger: commands for payroll processors, reads of the projected \
            tables, and the event stream, verification and replay for auditors. Every amount is a decimal string \
            next to its currency; every error is `application/problem+json` with a stable `code`. Send \
            `Authorization: Bearer <API key>`; commands take an `Idempotency-Key`; reads take \
            `wait_for_position` to read your own write."
    ),
    servers((url = "http://127.0.0.1:8080", description = "`payroll-ledger serve`")),
    paths(
        organization::register,
        organization::show,
        organization::change_settings,
        organization::configure_rule,
        organization::remove_rule,
        organization::define_currency,
        organization::set_tax_year,
        organization::map_gl_accounts,
        employees::hire,
        employees::list,
        employees::show,
        employees::history,
        employees::change_pay_rate,
        employees::change_position,
        employees::change_kyc,
        employees::terminate,
        employees::rehire,
        privacy::set_retention,
        privacy::erase,
        privacy::erasure_due,
        privacy::personal_data,
        wallets::open,
        wallets::list,
        wallets::show,
        wallets::statement,
        wallets::withdraw,
        wallets::transaction,
        wallets::settle,
        wallets::settle_many,
        wallets::fail,
        schedules::create,
        schedules::list,
        schedules::show,
        schedules::periods,
        payroll::create,
        payroll::add_lines,
        payroll::list,
        payroll::show,
        payroll::items,
        payroll::preview,
        payroll::calculate,
        payroll::approve,
        payroll::process,
        payroll::release,
        payroll::void,
        payroll::reverse,
        payslips::show,
        payslips::list,
        payslips::year_to_date,
        notifications::list,
        notifications::read,
        notifications::deliveries,
        notifications::templates,
        notifications::set_template,
        notifications::set_webhook,
        notifications::show_webhook,
        notifications::remove_webhook,
        audit::register,
        audit::journal,
        audit::reports,
        audit::audit_logs,
        audit::events,
        audit::export,
        audit::verify,
        audit::replay,
        transparency::latest_checkpoint,
        transparency::public_key,
        transparency::inclusion,
        transparency::consistency,
        transparency::run_evidence,
        system::health,
        system::ready,
        system::metrics,
        system::openapi,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth, &OperationIds, &ClosedVariants),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

/// API keys are sent as bearer tokens.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("plk_<key id>_<secret>")
            .description(Some("An API key: `payroll-ledger keys create --org <id> --role <role>`"))
            .build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The variants of a request enum that refuses unknown fields (`#[serde(deny_unknown_fields,
/// tag = ...)]`) say so too: utoipa leaves them open, and a client (or a fuzzer) reading the
/// document would mix one variant's fields into another's, which the server refuses.
struct ClosedVariants;

/// The request enums whose variants refuse unknown fields.
const CLOSED_ENUMS: &[&str] = &["CalculationInput"];

impl Modify for ClosedVariants {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        let Some(components) = openapi.components.as_mut() else { return };
        for name in CLOSED_ENUMS {
            let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(*name) else {
                panic!("{name} is a oneOf schema of the document");
            };
            for variant in &mut one_of.items {
                if let RefOr::T(Schema::Object(object)) = variant {
                    object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
            }
        }
    }
}

/// Operation ids unique across the API: the handler's name after its tag
/// (`wallets_show`, `employees_show`), where utoipa gives the handler's name alone.
struct OperationIds;

impl Modify for OperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.options,
                &mut item.head,
                &mut item.patch,
                &mut item.trace,
            ];
            for operation in operations.into_iter().flatten() {
                let tag = operation.tags.as_ref().and_then(|tags| tags.first()).map(|tag| tag.replace(' ', "_"));
                if let (Some(tag), Some(id)) = (tag, operation.operation_id.as_mut()) {
                    *id = format!("{tag}_{id}");
                }
            }
        }
    }
}

/// The document as `/openapi.json` serves it and `docs/openapi.json` keeps it.
pub fn document() -> String {
    let mut text = ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    /// The document in the repository is the one the server serves: a change of a handler
    /// or a type that changes the contract shows in the diff of `docs/openapi.json`.
    #[test]
    fn the_checked_in_document_is_the_generated_one() {
        let checked_in = include_str!("../../../docs/openapi.json");
        assert!(
            checked_in == super::document(),
            "docs/openapi.json is not the generated document: run `cargo run -p ledger-server -- openapi > docs/openapi.json`"
        );
    }

    /// utoipa keys schemas by the type's name alone: two types of one name would share a
    /// schema silently. Every schema the document references is one of its components, and
    /// every response type's name is taken once.
    #[test]
    fn every_schema_is_defined_once() {
        let document: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        let text = document.to_string();
        let components = document["components"]["schemas"].as_object().unwrap();
        for reference in text.split("#/components/schemas/").skip(1) {
            let name: String = reference.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            assert!(components.contains_key(&name), "{name} is referenced but not defined");
        }
        // Every source of the API, read from its folder: a file added later is counted too.
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(folder.join("api"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "rs"))
            .collect();
        files.push(folder.join("error.rs"));
        assert!(files.len() > 10, "the API's sources are where this test looks: {files:?}");
        let mut names = std::collections::HashMap::new();
        for file in &files {
            let source = std::fs::read_to_string(file).unwrap();
            for declaration in source.split("struct ").chain(source.split("enum ")).skip(1) {
                let name: String = declaration.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if components.contains_key(&name) {
                    names.entry(name).or_insert_with(Vec::new).push(file.file_name().unwrap().to_owned());
                }
            }
        }
        let twice: Vec<_> = names.iter().filter(|(_, files)| files.len() > 1).collect();
        assert!(twice.is_empty(), "schemas of one name: {twice:?}");
    }

    /// A request enum that refuses unknown fields says so in every variant's schema.
    #[test]
    fn every_closed_request_enum_is_closed_in_the_document() {
        let document: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut closed = Vec::new();
        for entry in std::fs::read_dir(folder).unwrap() {
            let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let lines: Vec<&str> = source.lines().collect();
            for (index, line) in lines.iter().enumerate() {
                let Some(rest) = line.trim().strip_prefix("pub enum ") else { continue };
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let attributes = &lines[index.saturating_sub(3)..index];
                if attributes.iter().any(|line| line.contains("#[serde(") && line.contains("deny_unknown_fields")) {
                    closed.push(name);
                }
            }
        }
        assert!(closed.contains(&"CalculationInput".to_owned()), "the sources were read: {closed:?}");
        for name in closed {
            let variants = document["components"]["schemas"][&name]["oneOf"].as_array().unwrap();
            for variant in variants {
                assert_eq!(variant["additionalProperties"], false, "{name}: {variant}");
            }
        }
    }

    /// The API's names for the domain's enums are the domain's own: each domain value,
    /// mapped (exhaustively) to the API's, is written the same and reads back.
    #[test]
    fn the_api_names_every_domain_enum_value_as_the_domain_does() {
        use crate::api::schema;
        fn same<Domain, Api>(values: &[Domain])
        where
            Domain: serde::Serialize + serde::de::DeserializeOwned + Copy + Into<Api>,
            Api: serde::Serialize,
        {
            for value in values {
                let api = serde_json::to_value((*value).into()).unwrap();
                assert_eq!(api, serde_json::to_value(value).unwrap());
                serde_json::from_value::<Domain>(api).unwrap();
            }
        }
        use ledger_core::calendar::PayFrequency as F;
        same::<F, schema::PayFrequency>(&[F::Weekly, F::Biweekly, F::SemiMonthly, F::Monthly]);
        use ledger_core::employee::KycStatus as K;
        same::<K, schema::KycStatus>(&[K::Pending, K::UnderReview, K::Approved, K::Rejected]);
        use ledger_core::gross_to_net::RuleParty as P;
        same::<P, schema::RuleParty>(&[P::Employee, P::Employer]);
        use ledger_core::payroll::RunStatus as R;
        let statuses = [
            R::Draft,
            R::Calculated,
            R::Approved,
            R::Processing,
            R::Completed,
            R::PartiallyFailed,
            R::Voided,
            R::Reversed,
        ];
        same::<R, schema::RunStatus>(&statuses);
    }
}
