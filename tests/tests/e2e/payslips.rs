//! Payslips and year-to-date totals: a hand-worked example across two tax years (UK start,
//! 6 April), regular and off-cycle runs and a reversal; the PDF rendered to PNG by poppler
//! and its text layer read back; the same payslip after a rebuild from the log, byte for
//! byte.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::World;

/// Hires at 6,000.00 a month from 1 March 2026, KYC approved, with a wallet.
async fn hire(world: &World, name: &str) -> (String, String) {
    let body = json!({
        "personal": { "full_name": name, "email": null, "address": null },
        "position": "Engineer", "department": "R&D",
        "rate": { "amount": { "amount": "6000.00", "currency": "USD" }, "basis": "monthly" },
        "pay_frequency": "monthly", "start_date": "2026-03-01"
    });
    let hired = world.ok(Method::POST, "/v1/employees", &world.processor, Some(body)).await;
    let employee = hired["employee_id"].as_str().unwrap().to_owned();
    world
        .ok(
            Method::POST,
            &format!("/v1/employees/{employee}/kyc"),
            &world.processor,
            Some(json!({ "status": "approved" })),
        )
        .await;
    let wallet = world
        .ok(
            Method::POST,
            "/v1/wallets",
            &world.processor,
            Some(json!({ "employee_id": employee, "public_key": format!("pk-{employee}"), "currency": "USD" })),
        )
        .await;
    (employee, wallet["wallet_id"].as_str().unwrap().to_owned())
}

/// Creates, calculates, approves and pays a run; returns its id.
async fn pay(world: &World, body: Value) -> String {
    let created = world.ok(Method::POST, "/v1/payroll-runs", &world.processor, Some(body)).await;
    let run = created["payroll_run_id"].as_str().unwrap().to_owned();
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/calculate"), &world.processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;
    run
}

fn month(start: &str, end: &str) -> Value {
    json!({ "period": { "start": start, "end": end } })
}

async fn synced_get(world: &World, path: &str) -> Value {
    let position = world.head_position().await;
    let separator = if path.contains('?') { '&' } else { '?' };
    world.ok(Method::GET, &format!("{path}{separator}wait_for_position={position}"), &world.processor, None).await
}

async fn pdf(world: &World, path: &str) -> Vec<u8> {
    let response = world
        .client
        .get(world.url(path))
        .bearer_auth(&world.processor)
        .header("Accept", "application/pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payslips_and_year_to_date_follow_the_tax_year_runs_and_reversals() {
    let world = World::new().await;
    world.register().await;
    // The UK tax year; an employer contribution of 7.65 % besides the 10 % withholding.
    let uk = json!({ "month": 4, "day": 6 });
    let (status, first) =
        world.call(Method::PUT, "/v1/organization/tax-year", &world.admin, Some(uk.clone()), Some("tax-year-1")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (_, repeat) =
        world.call(Method::PUT, "/v1/organization/tax-year", &world.admin, Some(uk), Some("tax-year-1")).await;
    assert_eq!((repeat["position"].clone(), repeat["replayed"].as_bool()), (first["position"].clone(), Some(true)));
    assert_eq!(world.count_of("TaxYearStartSet").await, 1, "a repeat is answered, not recorded again");
    for (body, field) in [
        (json!({ "month": 2, "day": 29 }), "day"),
        (json!({ "month": 13, "day": 1 }), "month"),
        (json!({ "month": "April", "day": 6 }), "month"),
    ] {
        let (status, problem) =
            world.call(Method::PUT, "/v1/organization/tax-year", &world.admin, Some(body), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{field}: {problem}");
    }
    let employer = json!({ "name": "Social security (employer)", "party": "employer", "calculation": { "kind": "percentage", "rate": "0.0765" }, "liability_account": "social_security" });
    world.ok(Method::PUT, "/v1/organization/rules/social", &world.admin, Some(employer)).await;
    let (ada, wallet) = hire(&world, "Ada Lovelace").await;

    // March is paid on 31 March (tax year 2025-26); April and May in 2026-27; a bonus of
    // 1,000.00 on 15 May, then reversed.
    let march = pay(&world, month("2026-03-01", "2026-03-31")).await;
    let april = pay(&world, month("2026-04-01", "2026-04-30")).await;
    let may = pay(&world, month("2026-05-01", "2026-05-31")).await;
    let bonus_lines = json!([{ "employee_id": ada, "lines": [{ "category": "bonus", "code": "BON-Q1", "amount": { "amount": "1000.00", "currency": "USD" }, "taxable": true }] }]);
    let bonus = pay(
        &world,
        json!({ "period": { "start": "2026-05-01", "end": "2026-05-31" }, "pay_date": "2026-05-15", "off_cycle_reason": "Q1 bonus", "lines": bonus_lines }),
    )
    .await;

    // By hand: a month is 6,000.00 gross, 600.00 withheld, 459.00 employer contribution,
    // 5,400.00 net; the bonus 1,000.00, 100.00, 76.50, 900.00.
    let ytd = synced_get(&world, &format!("/v1/employees/{ada}/year-to-date?year=2026")).await;
    assert_eq!(
        (ytd["tax_year_start"].as_str(), ytd["tax_year_end"].as_str()),
        (Some("2026-04-06"), Some("2027-04-05"))
    );
    let totals = &ytd["totals"][0];
    assert_eq!(totals["items"], 3, "{ytd}");
    assert_eq!(
        [&totals["gross"], &totals["deductions"], &totals["contributions"], &totals["net"]],
        ["13000.00", "1300.00", "994.50", "11700.00"]
    );
    let earlier = synced_get(&world, &format!("/v1/employees/{ada}/year-to-date?year=2025")).await;
    assert_eq!(
        (earlier["totals"][0]["gross"].as_str(), earlier["totals"][0]["items"].as_i64()),
        (Some("6000.00"), Some(1))
    );

    // The May payslip: its lines, rate and days, each rule's year to date after it, payment.
    let may_path = format!("/v1/payroll-runs/{may}/items/{ada}/payslip");
    let payslip = synced_get(&world, &may_path).await;
    assert_eq!(payslip["employer"]["name"], "Acme");
    assert_eq!(payslip["employee"]["name"], "Ada Lovelace");
    assert_eq!((payslip["pay_date"].as_str(), payslip["status"].as_str()), (Some("2026-05-31"), Some("paid")));
    let earning = &payslip["earnings"][0];
    assert_eq!((earning["kind"].as_str(), earning["days"].as_i64()), (Some("regular"), Some(31)));
    assert_eq!((earning["rate"].as_str(), earning["rate_basis"].as_str()), (Some("6000.00"), Some("monthly")));
    assert_eq!([&payslip["gross"], &payslip["deductions_total"], &payslip["net"]], ["6000.00", "600.00", "5400.00"]);
    assert_eq!(payslip["deductions"][0]["amount"], "600.00");
    assert_eq!(payslip["deductions"][0]["year_to_date"], "1200.00", "April and May: {payslip}");
    assert_eq!(payslip["contributions"][0]["year_to_date"], "918.00");
    assert_eq!(payslip["year_to_date"]["gross"], "12000.00");
    assert_eq!(payslip["year_to_date"]["includes_this_payment"], true);
    assert_eq!(payslip["payment"]["wallet_id"], wallet.as_str());
    assert_eq!(payslip["payment"]["status"], "pending");

    // The bonus: a one-off line, dated 15 May, and its year to date counts everything so far.
    let bonus_slip = synced_get(&world, &format!("/v1/payroll-runs/{bonus}/items/{ada}/payslip")).await;
    assert_eq!(bonus_slip["earnings"][0]["kind"], "one_off");
    assert_eq!(
        (bonus_slip["earnings"][0]["code"].as_str(), bonus_slip["net"].as_str()),
        (Some("BON-Q1"), Some("900.00"))
    );
    assert_eq!(bonus_slip["year_to_date"]["gross"], "13000.00");

    // Reversing the bonus takes it out of the tax year; its payslip stays as issued, marked.
    world
        .ok(
            Method::POST,
            &format!("/v1/payroll-runs/{bonus}/reverse"),
            &world.processor,
            Some(json!({ "reason": "paid in error" })),
        )
        .await;
    let ytd = synced_get(&world, &format!("/v1/employees/{ada}/year-to-date?year=2026")).await;
    let totals = &ytd["totals"][0];
    assert_eq!(totals["items"], 2);
    assert_eq!(
        [&totals["gross"], &totals["deductions"], &totals["contributions"], &totals["net"]],
        ["12000.00", "1200.00", "918.00", "10800.00"]
    );
    let reversed = synced_get(&world, &format!("/v1/payroll-runs/{bonus}/items/{ada}/payslip")).await;
    assert_eq!(reversed["status"], "reversed");

    // The list, by pay date: March, April, the bonus (15 May), May.
    let list = synced_get(&world, &format!("/v1/employees/{ada}/payslips?limit=3")).await;
    let runs: Vec<&str> =
        list["payslips"].as_array().unwrap().iter().map(|p| p["payroll_run_id"].as_str().unwrap()).collect();
    assert_eq!(runs, [march.as_str(), april.as_str(), bonus.as_str()]);
    let next = list["next_after"].as_str().unwrap();
    let rest = synced_get(&world, &format!("/v1/employees/{ada}/payslips?after={next}")).await;
    assert_eq!(rest["payslips"][0]["payroll_run_id"], may.as_str());
    assert_eq!(rest["payslips"].as_array().unwrap().len(), 1);

    // The PDF: a page poppler renders, whose text has the net pay and the year to date.
    let bytes = pdf(&world, &may_path).await;
    assert!(bytes.starts_with(b"%PDF-"));
    let directory = std::env::temp_dir().join(format!("payslip-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&directory).unwrap();
    let file = directory.join("payslip.pdf");
    std::fs::write(&file, &bytes).unwrap();
    let tool = |name: &str| {
        std::process::Command::new(name).output().unwrap_or_else(|error| {
            panic!("{name} is needed to check the payslip PDF ({error}): apt-get install poppler-utils")
        })
    };
    tool("pdftoppm");
    let rendered = std::process::Command::new("pdftoppm")
        .args(["-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile"])
        .arg(&file)
        .arg(directory.join("page"))
        .status()
        .unwrap();
    assert!(rendered.success());
    let png = std::fs::read(directory.join("page.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 2_000, "a rendered page, {} bytes", png.len());
    let text = std::process::Command::new("pdftotext").arg("-layout").arg(&file).arg("-").output().unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    for expected in ["Pay statement", "Ada Lovelace", "Net pay", "5,400.00", "12,000.00", "31 days at 6,000.00 monthly"]
    {
        assert!(text.contains(expected), "{expected:?} in the PDF's text:\n{text}");
    }
    std::fs::remove_dir_all(&directory).unwrap();

    // Derived from the log alone: rebuilt, every read table gives the same payslip, byte
    // for byte, JSON and PDF.
    let json_before = world.client.get(world.url(&may_path)).bearer_auth(&world.processor).send().await.unwrap();
    let json_before = json_before.bytes().await.unwrap();
    for projection in ledger_projections::projections::all() {
        ledger_projections::rebuild(&world.db.pool, projection.as_ref(), &mut |_| {}).await.unwrap();
    }
    let json_after = world.client.get(world.url(&may_path)).bearer_auth(&world.processor).send().await.unwrap();
    assert_eq!(json_after.bytes().await.unwrap(), json_before);
    assert_eq!(pdf(&world, &may_path).await, bytes);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_item_has_a_payslip_a_pending_one_none_and_other_organizations_see_neither() {
    let world = World::new().await;
    world.register().await;
    let (held, _) = world.hire("3000.00", false).await;
    let (paid, _) = world.hire("3000.00", true).await;
    let run = world.calculated_run().await;

    // Calculated, not paid: no payslip yet.
    let position = world.head_position().await;
    let pending = format!("/v1/payroll-runs/{run}/items/{paid}/payslip?wait_for_position={position}");
    let (status, problem) = world.get(&pending, &world.processor).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("pending"));
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;

    let slip = synced_get(&world, &format!("/v1/payroll-runs/{run}/items/{held}/payslip")).await;
    assert_eq!(slip["status"], "held");
    assert!(slip["hold_reason"].as_str().unwrap().contains("KYC"));
    assert_eq!(slip["payment"], Value::Null);
    assert_eq!(slip["year_to_date"]["includes_this_payment"], false);
    assert_eq!(slip["year_to_date"]["gross"], "0.00");

    // Bad ids and cursors are 400, another organization's items 404.
    for path in [
        format!("/v1/payroll-runs/not-a-run/items/{held}/payslip"),
        format!("/v1/employees/{held}/payslips?after=yesterday"),
        format!("/v1/employees/{held}/payslips?limit=0"),
        format!("/v1/employees/{held}/year-to-date?year=10000"),
    ] {
        let (status, problem) = world.get(&path, &world.processor).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
    }
    for path in [
        format!("/v1/payroll-runs/{run}/items/{held}/payslip"),
        format!("/v1/employees/{held}/payslips"),
        format!("/v1/employees/{held}/year-to-date"),
    ] {
        let (status, _) = world.get(&path, &world.other_admin).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    world.stop().await;
}

/// The journal CSV's rows as maps of column to value.
async fn journal_rows(
    world: &World,
    run: &str,
) -> (StatusCode, Vec<std::collections::BTreeMap<String, String>>, String) {
    let position = world.head_position().await;
    let response = world
        .client
        .get(world.url(&format!("/v1/payroll-runs/{run}/journal?format=csv&wait_for_position={position}")))
        .bearer_auth(&world.auditor)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    let body = response.text().await.unwrap();
    if !status.is_success() {
        assert_eq!(content_type, "application/problem+json");
        return (status, Vec::new(), body);
    }
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        ["date", "account_code", "description", "debit", "credit", "currency", "payroll_run_id", "reference"]
    );
    let rows = reader
        .records()
        .map(|record| headers.iter().zip(record.unwrap().iter()).map(|(k, v)| (k.to_owned(), v.to_owned())).collect())
        .collect();
    (status, rows, body)
}

fn amount(text: &str) -> rust_decimal::Decimal {
    if text.is_empty() { rust_decimal::Decimal::ZERO } else { text.parse().unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_csv_balances_on_the_chart_of_accounts_and_names_an_unmapped_account() {
    let world = World::new().await;
    world.register().await;
    let employer = json!({ "name": "Social security (employer)", "party": "employer", "calculation": { "kind": "percentage", "rate": "0.0765" }, "liability_account": "social_security" });
    world.ok(Method::PUT, "/v1/organization/rules/social", &world.admin, Some(employer)).await;
    world.hire("6000.00", true).await;
    world.hire("4000.00", true).await;
    let run = world.calculated_run().await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/approve"), &world.second_processor, None).await;
    world.ok(Method::POST, &format!("/v1/payroll-runs/{run}/process"), &world.processor, None).await;

    // Nothing mapped, then all but one liability: 422 naming the account; nothing written.
    let (status, _, problem) = journal_rows(&world, &run).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert!(problem.contains("unmapped_account") && problem.contains("wages_expense"), "{problem}");
    let mut accounts = json!({ "funding": "1010", "wages_expense": "6000", "employer_contributions_expense": "6100", "wallets": "2100", "liability:tax": "2200" });
    world.ok(Method::PUT, "/v1/organization/gl-accounts", &world.admin, Some(json!({ "accounts": accounts }))).await;
    let (status, _, problem) = journal_rows(&world, &run).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(problem.contains("liability:social_security"), "{problem}");

    // Bad mappings and formats are 400 naming the field; a processor may not map.
    let before = world.event_count().await;
    for (body, field) in [
        (json!({ "accounts": { "cash": "1000" } }), "accounts.cash"),
        (json!({ "accounts": { "funding": "" } }), "accounts.funding"),
        (json!({ "accounts": { "funding": 1010 } }), "accounts.funding"),
        (json!({ "codes": {} }), "codes"),
    ] {
        let (status, problem) =
            world.call(Method::PUT, "/v1/organization/gl-accounts", &world.admin, Some(body), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{field}: {problem}");
    }
    let (status, _) = world
        .call(
            Method::PUT,
            "/v1/organization/gl-accounts",
            &world.processor,
            Some(json!({ "accounts": accounts.clone() })),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = world.get(&format!("/v1/payroll-runs/{run}/journal?format=xml"), &world.auditor).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(world.event_count().await, before, "nothing written");

    accounts["liability:social_security"] = json!("2300");
    world.ok(Method::PUT, "/v1/organization/gl-accounts", &world.admin, Some(json!({ "accounts": accounts }))).await;
    let (status, rows, body) = journal_rows(&world, &run).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Each entry balances; the accrual is dated the pay date with the run's gross as wages.
    let mut balance: std::collections::BTreeMap<String, rust_decimal::Decimal> = Default::default();
    let mut wages = rust_decimal::Decimal::ZERO;
    for row in &rows {
        assert_eq!((row["currency"].as_str(), row["payroll_run_id"].as_str()), ("USD", run.as_str()));
        assert!(row["debit"].is_empty() != row["credit"].is_empty(), "one side a line: {row:?}");
        *balance.entry(row["reference"].clone()).or_default() += amount(&row["debit"]) - amount(&row["credit"]);
        if row["account_code"] == "6000" {
            assert_eq!(row["date"], "2026-01-31");
            wages += amount(&row["debit"]) - amount(&row["credit"]);
        }
    }
    assert_eq!(balance.len(), 2, "an accrual and a payment: {body}");
    assert!(balance.values().all(rust_decimal::Decimal::is_zero), "{body}");
    assert_eq!(wages, "10000.00".parse().unwrap());
    let contributions: rust_decimal::Decimal =
        rows.iter().filter(|row| row["account_code"] == "6100").map(|row| amount(&row["debit"])).sum();
    assert_eq!(contributions, "765.00".parse().unwrap());
    let funding: rust_decimal::Decimal =
        rows.iter().filter(|row| row["account_code"] == "1010").map(|row| amount(&row["credit"])).sum();
    assert_eq!(funding, "10765.00".parse().unwrap(), "funding pays gross and contributions");

    // Reversed, the run's journal undoes itself: every code nets to zero.
    world
        .ok(
            Method::POST,
            &format!("/v1/payroll-runs/{run}/reverse"),
            &world.processor,
            Some(json!({ "reason": "wrong month" })),
        )
        .await;
    let (status, rows, body) = journal_rows(&world, &run).await;
    assert_eq!(status, StatusCode::OK);
    let mut by_code: std::collections::BTreeMap<String, rust_decimal::Decimal> = Default::default();
    for row in &rows {
        *by_code.entry(row["account_code"].clone()).or_default() += amount(&row["debit"]) - amount(&row["credit"]);
    }
    assert!(by_code.values().all(rust_decimal::Decimal::is_zero), "{body}");
    assert!(rows.iter().any(|row| row["reference"].contains("reversal_accrual")), "{body}");
    world.stop().await;
}

/// Waits until every projection has applied the log's last event.
pub async fn wait_projected(world: &World) {
    let position = world.head_position().await;
    world.ok(Method::GET, &format!("/v1/organization?wait_for_position={position}"), &world.processor, None).await;
}
