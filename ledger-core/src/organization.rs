//! The organization: a tenant with its currency, pay schedule and payroll rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{DomainError, require_text};
use crate::event::{Aggregate, DomainEvent};
use crate::gross_to_net::DeductionRule;
use crate::ids::{OrganizationId, PayScheduleId};
use crate::money::Currency;
use crate::notification::{self, Channel};

pub use crate::calendar::{PaySchedule, TaxYearStart};

/// The keys of an organization's general ledger mapping besides `liability:<name>`: the
/// ledger's funding account, the expense accounts of a payroll's accrual, and the
/// employees' wallets (net pay).
pub const GL_ACCOUNT_KEYS: &[&str] = &["funding", "wages_expense", "employer_contributions_expense", "wallets"];
/// The longest chart-of-accounts code accepted.
pub const GL_CODE_CHARS_MAX: usize = 64;
/// The most accounts one mapping names.
pub const GL_ACCOUNTS_MAX: usize = 200;

/// One of an organization's pay schedules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSchedule {
    pub id: PayScheduleId,
    pub name: String,
    pub schedule: PaySchedule,
}

/// The id of the default pay schedule of an organization registered before schedules had
/// ids of their own: derived from the organization's id.
pub fn legacy_default_schedule_id(organization_id: OrganizationId) -> PayScheduleId {
    PayScheduleId::from_uuid(uuid::Uuid::new_v5(&organization_id.as_uuid(), b"default pay schedule"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: OrganizationId,
    pub name: String,
    pub base_currency: Currency,
    /// The schedule the organization registered with: where employees go when their hire
    /// names none.
    pub default_pay_schedule_id: PayScheduleId,
    pub pay_schedules: BTreeMap<PayScheduleId, NamedSchedule>,
    /// Rules by id, applied in id order.
    pub rules: BTreeMap<String, DeductionRule>,
    /// Currencies the organization defined beyond the known ones.
    pub currencies: BTreeMap<String, Currency>,
    /// Years payroll records are kept after an employee left, before their personal data
    /// may be erased; `None` until the organization sets it.
    pub retention_years: Option<u32>,
    /// The day the organization's tax year starts (1 January until it sets one).
    pub tax_year_start: TaxYearStart,
    /// Ledger accounts (see [`GL_ACCOUNT_KEYS`], and `liability:<name>`) to the codes of the
    /// organization's chart of accounts, for the journal its general ledger imports.
    pub gl_accounts: BTreeMap<String, String>,
    /// Each notification kind's latest template version (none: the default, version 0).
    pub template_versions: BTreeMap<String, u32>,
    /// The webhook notifications are delivered to, and its configuration's version.
    pub webhook: Option<(String, u32)>,
    /// The last webhook version given (a removed webhook's version is not given again).
    pub webhook_versions: u32,
}

impl Organization {
    /// A known currency, or one this organization defined.
    pub fn currency(&self, code: &str) -> Result<Currency, DomainError> {
        match self.currencies.get(code) {
            Some(currency) => Ok(currency.clone()),
            None => Ok(Currency::known(code)?),
        }
    }

    pub fn default_schedule(&self) -> &NamedSchedule {
        &self.pay_schedules[&self.default_pay_schedule_id]
    }

    /// One of the organization's schedules.
    pub fn schedule(&self, id: PayScheduleId, field: &str) -> Result<&NamedSchedule, DomainError> {
        self.pay_schedules.get(&id).ok_or_else(|| {
            DomainError::invalid(
                field,
                format!("{id} is not a pay schedule of this organization (GET /v1/pay-schedules)"),
            )
        })
    }
}

#[derive(Debug, Clone)]
pub enum OrganizationCommand {
    Register {
        organization_id: OrganizationId,
        name: String,
        base_currency: Currency,
        pay_schedule: PaySchedule,
        default_pay_schedule_id: PayScheduleId,
    },
    ChangeSettings {
        name: Option<String>,
        pay_schedule: Option<PaySchedule>,
    },
    AddPaySchedule {
        pay_schedule_id: PayScheduleId,
        name: String,
        schedule: PaySchedule,
    },
    ConfigureRule {
        rule: DeductionRule,
    },
    RemoveRule {
        rule_id: String,
    },
    DefineCurrency {
        code: String,
        scale: u32,
    },
    SetRetention {
        years_after_termination: u32,
    },
    SetTaxYear {
        start: TaxYearStart,
    },
    /// Replaces the whole mapping of ledger accounts to chart-of-accounts codes.
    MapGeneralLedgerAccounts {
        accounts: BTreeMap<String, String>,
    },
    SetNotificationTemplate {
        kind: String,
        channel: Channel,
        subject: String,
        body: String,
    },
    ConfigureWebhook {
        url: String,
    },
    RemoveWebhook,
}

/// Checks a general ledger mapping: known keys, codes that a general ledger takes.
fn validate_gl_accounts(accounts: &BTreeMap<String, String>) -> Result<(), DomainError> {
    if accounts.len() > GL_ACCOUNTS_MAX {
        return Err(DomainError::invalid("accounts", format!("maps at most {GL_ACCOUNTS_MAX} accounts")));
    }
    for (key, code) in accounts {
        let field = format!("accounts.{key}");
        let liability = key.strip_prefix("liability:");
        if !GL_ACCOUNT_KEYS.contains(&key.as_str()) && liability.is_none_or(|name| name.trim().is_empty()) {
            return Err(DomainError::invalid(
                field,
                format!(
                    "is not a ledger account: {} or liability:<the rule's liability account>",
                    GL_ACCOUNT_KEYS.join(", ")
                ),
            ));
        }
        if code.trim().is_empty() || code.chars().count() > GL_CODE_CHARS_MAX || code.chars().any(char::is_control) {
            return Err(DomainError::invalid(
                field,
                format!(
                    "an account code is 1 to {GL_CODE_CHARS_MAX} characters, not blank, without control characters"
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum OrganizationEvent {
    OrganizationRegistered {
        organization_id: OrganizationId,
        name: String,
        base_currency: Currency,
        pay_schedule: PaySchedule,
        /// Absent in events recorded before schedules had ids
        /// ([`legacy_default_schedule_id`] is then the id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default_pay_schedule_id: Option<PayScheduleId>,
    },
    /// Changed the default schedule in events recorded before schedules were fixed once
    /// defined; no longer decided.
    OrganizationSettingsChanged {
        name: Option<String>,
        pay_schedule: Option<PaySchedule>,
    },
    DeductionRuleConfigured {
        rule: DeductionRule,
    },
    DeductionRuleRemoved {
        rule_id: String,
    },
    CurrencyDefined {
        currency: Currency,
    },
    PayScheduleAdded {
        pay_schedule_id: PayScheduleId,
        name: String,
        #[serde(flatten)]
        schedule: PaySchedule,
    },
    /// How long payroll records are kept after an employee left (personal data may be
    /// erased from then on).
    RetentionPeriodSet {
        years_after_termination: u32,
    },
    /// The day the tax year starts: payments count in the tax year of their run's pay date,
    /// by the start in force when they are paid.
    TaxYearStartSet {
        start: TaxYearStart,
    },
    /// Ledger accounts mapped to the organization's chart-of-accounts codes (the whole
    /// mapping).
    GeneralLedgerAccountsMapped {
        accounts: BTreeMap<String, String>,
    },
    /// A new version of the template a kind of notification is rendered with from now on.
    NotificationTemplateSet {
        kind: String,
        version: u32,
        channel: Channel,
        subject: String,
        body: String,
    },
    /// Notifications of the webhook channel are delivered here from now on (signed with the
    /// secret of this `version`).
    WebhookConfigured {
        url: String,
        version: u32,
    },
    WebhookRemoved {
        version: u32,
    },
}

impl DomainEvent for OrganizationEvent {
    const EVENT_TYPES: &'static [&'static str] = &[
        "OrganizationRegistered",
        "OrganizationSettingsChanged",
        "DeductionRuleConfigured",
        "DeductionRuleRemoved",
        "CurrencyDefined",
        "PayScheduleAdded",
        "RetentionPeriodSet",
        "TaxYearStartSet",
        "GeneralLedgerAccountsMapped",
        "NotificationTemplateSet",
        "WebhookConfigured",
        "WebhookRemoved",
    ];
}

#[derive(Debug, Clone, Copy, Default)]
pub struct OrganizationAggregate;

impl Aggregate for OrganizationAggregate {
    const STREAM_TYPE: &'static str = "organization";
    type State = Option<Organization>;
    type Command = OrganizationCommand;
    type Event = OrganizationEvent;

    fn decide(state: &Self::State, command: OrganizationCommand) -> Result<Vec<OrganizationEvent>, DomainError> {
        if let OrganizationCommand::Register {
            organization_id,
            name,
            base_currency,
            pay_schedule,
            default_pay_schedule_id,
        } = command
        {
            if state.is_some() {
                return Err(DomainError::AlreadyExists { entity: "organization", id: organization_id.to_string() });
            }
            require_text("name", &name)?;
            pay_schedule.validate()?;
            return Ok(vec![OrganizationEvent::OrganizationRegistered {
                organization_id,
                name,
                base_currency,
                pay_schedule,
                default_pay_schedule_id: Some(default_pay_schedule_id),
            }]);
        }
        let organization =
            state.as_ref().ok_or(DomainError::NotFound { entity: "organization", id: "(unregistered)".to_owned() })?;
        match command {
            OrganizationCommand::Register { .. } => unreachable!("handled above"),
            OrganizationCommand::ChangeSettings { name, pay_schedule } => {
                if pay_schedule.is_some() {
                    return Err(DomainError::invalid(
                        "pay_schedule",
                        "a pay schedule never changes once defined (runs may have paid its periods): \
                         add one with POST /v1/pay-schedules and hire employees onto it",
                    ));
                }
                let Some(name) = name else { return Err(DomainError::invalid("name", "nothing to change")) };
                require_text("name", &name)?;
                Ok(vec![OrganizationEvent::OrganizationSettingsChanged { name: Some(name), pay_schedule: None }])
            }
            OrganizationCommand::AddPaySchedule { pay_schedule_id, name, schedule } => {
                if organization.pay_schedules.contains_key(&pay_schedule_id) {
                    return Err(DomainError::AlreadyExists { entity: "pay schedule", id: pay_schedule_id.to_string() });
                }
                require_text("name", &name)?;
                schedule.validate()?;
                Ok(vec![OrganizationEvent::PayScheduleAdded { pay_schedule_id, name, schedule }])
            }
            OrganizationCommand::ConfigureRule { rule } => {
                rule.validate()?;
                if let Some(currency) = rule.currency() {
                    organization.currency(currency.code())?;
                }
                Ok(vec![OrganizationEvent::DeductionRuleConfigured { rule }])
            }
            OrganizationCommand::RemoveRule { rule_id } => {
                if !organization.rules.contains_key(&rule_id) {
                    return Err(DomainError::NotFound { entity: "deduction rule", id: rule_id });
                }
                Ok(vec![OrganizationEvent::DeductionRuleRemoved { rule_id }])
            }
            OrganizationCommand::DefineCurrency { code, scale } => {
                let currency = Currency::custom(&code, scale)?;
                if organization.currencies.contains_key(&code) || Currency::known(&code).is_ok() {
                    return Err(DomainError::AlreadyExists { entity: "currency", id: code });
                }
                Ok(vec![OrganizationEvent::CurrencyDefined { currency }])
            }
            OrganizationCommand::SetRetention { years_after_termination } => {
                let most = crate::employee::RETENTION_YEARS_MAX;
                if years_after_termination == 0 || years_after_termination > most {
                    return Err(DomainError::invalid(
                        "years_after_termination",
                        format!("must be from 1 to {most}, not {years_after_termination}"),
                    ));
                }
                Ok(vec![OrganizationEvent::RetentionPeriodSet { years_after_termination }])
            }
            OrganizationCommand::SetTaxYear { start } => {
                let start = TaxYearStart::new(start.month, start.day)?;
                Ok(vec![OrganizationEvent::TaxYearStartSet { start }])
            }
            OrganizationCommand::MapGeneralLedgerAccounts { accounts } => {
                validate_gl_accounts(&accounts)?;
                Ok(vec![OrganizationEvent::GeneralLedgerAccountsMapped { accounts }])
            }
            OrganizationCommand::SetNotificationTemplate { kind, channel, subject, body } => {
                notification::placeholders(&kind)?;
                notification::validate_text("subject", &subject, notification::SUBJECT_CHARS_MAX, &kind)?;
                notification::validate_text("body", &body, notification::BODY_CHARS_MAX, &kind)?;
                let version = organization.template_versions.get(&kind).copied().unwrap_or(0) + 1;
                Ok(vec![OrganizationEvent::NotificationTemplateSet { kind, version, channel, subject, body }])
            }
            OrganizationCommand::ConfigureWebhook { url } => {
                notification::validate_webhook_url(&url)?;
                Ok(vec![OrganizationEvent::WebhookConfigured { url, version: organization.webhook_versions + 1 }])
            }
            OrganizationCommand::RemoveWebhook => match &organization.webhook {
                Some((_, version)) => Ok(vec![OrganizationEvent::WebhookRemoved { version: *version }]),
                None => Err(DomainError::NotFound { entity: "webhook", id: "(none configured)".to_owned() }),
            },
        }
    }

    fn evolve(state: Self::State, event: &OrganizationEvent) -> Self::State {
        if let OrganizationEvent::OrganizationRegistered {
            organization_id,
            name,
            base_currency,
            pay_schedule,
            default_pay_schedule_id,
        } = event
        {
            let default = default_pay_schedule_id.unwrap_or_else(|| legacy_default_schedule_id(*organization_id));
            let schedule = NamedSchedule { id: default, name: "Default".to_owned(), schedule: *pay_schedule };
            return Some(Organization {
                id: *organization_id,
                name: name.clone(),
                base_currency: base_currency.clone(),
                default_pay_schedule_id: default,
                pay_schedules: BTreeMap::from([(default, schedule)]),
                rules: BTreeMap::new(),
                currencies: BTreeMap::new(),
                retention_years: None,
                tax_year_start: TaxYearStart::default(),
                gl_accounts: BTreeMap::new(),
                template_versions: BTreeMap::new(),
                webhook: None,
                webhook_versions: 0,
            });
        }
        let mut organization = state.expect("an organization's later events follow its registration");
        match event {
            OrganizationEvent::OrganizationRegistered { .. } => unreachable!("handled above"),
            OrganizationEvent::OrganizationSettingsChanged { name, pay_schedule } => {
                if let Some(name) = name {
                    organization.name.clone_from(name);
                }
                if let Some(pay_schedule) = pay_schedule {
                    let default = organization.default_pay_schedule_id;
                    organization.pay_schedules.get_mut(&default).expect("the default schedule exists").schedule =
                        *pay_schedule;
                }
            }
            OrganizationEvent::DeductionRuleConfigured { rule } => {
                organization.rules.insert(rule.id.clone(), rule.clone());
            }
            OrganizationEvent::DeductionRuleRemoved { rule_id } => {
                organization.rules.remove(rule_id);
            }
            OrganizationEvent::CurrencyDefined { currency } => {
                organization.currencies.insert(currency.code().to_owned(), currency.clone());
            }
            OrganizationEvent::PayScheduleAdded { pay_schedule_id, name, schedule } => {
                let added = NamedSchedule { id: *pay_schedule_id, name: name.clone(), schedule: *schedule };
                organization.pay_schedules.insert(*pay_schedule_id, added);
            }
            OrganizationEvent::RetentionPeriodSet { years_after_termination } => {
                organization.retention_years = Some(*years_after_termination);
            }
            OrganizationEvent::TaxYearStartSet { start } => organization.tax_year_start = *start,
            OrganizationEvent::GeneralLedgerAccountsMapped { accounts } => {
                organization.gl_accounts.clone_from(accounts)
            }
            OrganizationEvent::NotificationTemplateSet { kind, version, .. } => {
                organization.template_versions.insert(kind.clone(), *version);
            }
            OrganizationEvent::WebhookConfigured { url, version } => {
                organization.webhook = Some((url.clone(), *version));
                organization.webhook_versions = *version;
            }
            OrganizationEvent::WebhookRemoved { .. } => organization.webhook = None,
        }
        Some(organization)
    }
}
