//! The organization: a tenant with its currency, pay schedule and payroll rules.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::calendar::PayFrequency;
use crate::error::{DomainError, require_text};
use crate::event::{Aggregate, DomainEvent};
use crate::gross_to_net::DeductionRule;
use crate::ids::OrganizationId;
use crate::money::Currency;

/// When an organization pays by default: the frequency and the first day of a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaySchedule {
    pub frequency: PayFrequency,
    pub anchor_date: NaiveDate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Organization {
    pub id: OrganizationId,
    pub name: String,
    pub base_currency: Currency,
    pub pay_schedule: PaySchedule,
    /// Rules by id, applied in id order.
    pub rules: BTreeMap<String, DeductionRule>,
    /// Currencies the organization defined beyond the known ones.
    pub currencies: BTreeMap<String, Currency>,
}

impl Organization {
    /// A known currency, or one this organization defined.
    pub fn currency(&self, code: &str) -> Result<Currency, DomainError> {
        match self.currencies.get(code) {
            Some(currency) => Ok(currency.clone()),
            None => Ok(Currency::known(code)?),
        }
    }
}

#[derive(Debug, Clone)]
pub enum OrganizationCommand {
    Register { organization_id: OrganizationId, name: String, base_currency: Currency, pay_schedule: PaySchedule },
    ChangeSettings { name: Option<String>, pay_schedule: Option<PaySchedule> },
    ConfigureRule { rule: DeductionRule },
    RemoveRule { rule_id: String },
    DefineCurrency { code: String, scale: u32 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum OrganizationEvent {
    OrganizationRegistered {
        organization_id: OrganizationId,
        name: String,
        base_currency: Currency,
        pay_schedule: PaySchedule,
    },
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
}

impl DomainEvent for OrganizationEvent {
    const EVENT_TYPES: &'static [&'static str] = &[
        "OrganizationRegistered",
        "OrganizationSettingsChanged",
        "DeductionRuleConfigured",
        "DeductionRuleRemoved",
        "CurrencyDefined",
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
        if let OrganizationCommand::Register { organization_id, name, base_currency, pay_schedule } = command {
            if state.is_some() {
                return Err(DomainError::AlreadyExists { entity: "organization", id: organization_id.to_string() });
            }
            require_text("name", &name)?;
            return Ok(vec![OrganizationEvent::OrganizationRegistered {
                organization_id,
                name,
                base_currency,
                pay_schedule,
            }]);
        }
        let organization =
            state.as_ref().ok_or(DomainError::NotFound { entity: "organization", id: "(unregistered)".to_owned() })?;
        match command {
            OrganizationCommand::Register { .. } => unreachable!("handled above"),
            OrganizationCommand::ChangeSettings { name, pay_schedule } => {
                if let Some(name) = &name {
                    require_text("name", name)?;
                }
                if name.is_none() && pay_schedule.is_none() {
                    return Err(DomainError::invalid("settings", "name or pay_schedule must change"));
                }
                Ok(vec![OrganizationEvent::OrganizationSettingsChanged { name, pay_schedule }])
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
        }
    }

    fn evolve(state: Self::State, event: &OrganizationEvent) -> Self::State {
        if let OrganizationEvent::OrganizationRegistered { organization_id, name, base_currency, pay_schedule } = event
        {
            return Some(Organization {
                id: *organization_id,
                name: name.clone(),
                base_currency: base_currency.clone(),
                pay_schedule: pay_schedule.clone(),
                rules: BTreeMap::new(),
                currencies: BTreeMap::new(),
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
                    organization.pay_schedule = pay_schedule.clone();
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
        }
        Some(organization)
    }
}
