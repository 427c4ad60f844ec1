//! A payslip as a PDF: an A4 pay statement laid out like a printed one (employer and
//! employee, period and pay date, earnings with rate and days, deductions and employer
//! contributions each with its year to date, the totals, the payment), written with
//! `pdf-writer` in the standard Helvetica fonts (nothing embedded). Nothing in it depends on
//! the time it is rendered: the same payslip gives the same bytes.

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};
use rust_decimal::Decimal;

use crate::api::payslips::{PayslipRuleLine, PayslipView};

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const LEFT: f32 = 50.0;
const RIGHT: f32 = PAGE_WIDTH - 50.0;
const BOTTOM: f32 = 60.0;
const REGULAR: Name<'static> = Name(b"F1");
const BOLD: Name<'static> = Name(b"F2");

/// Text in WinAnsi (Latin-1 for the letters a name uses; anything else becomes `?`).
fn win_ansi(text: &str) -> Vec<u8> {
    text.chars()
        .map(|character| match u32::from(character) {
            code @ (0x20..=0x7e | 0xa0..=0xff) => code as u8,
            _ => b'?',
        })
        .collect()
}

/// Helvetica's width of `text` at `size` (the characters an amount has; others as a digit).
fn amount_width(text: &str, size: f32) -> f32 {
    let units: u32 = text
        .chars()
        .map(|character| match character {
            '.' | ',' | ' ' => 278,
            '-' => 333,
            _ => 556,
        })
        .sum();
    units as f32 * size / 1000.0
}

/// An amount with thousands separators, its decimals as given (`1234567.50` as
/// `1,234,567.50`).
fn amount(value: Decimal) -> String {
    let text = value.to_string();
    let (sign, digits) = text.strip_prefix('-').map_or(("", text.as_str()), |rest| ("-", rest));
    let (whole, fraction) = digits.split_once('.').map_or((digits, None), |(whole, fraction)| (whole, Some(fraction)));
    let mut grouped = String::new();
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match fraction {
        Some(fraction) => format!("{sign}{grouped}.{fraction}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Pages of content, written top to bottom; a new page starts when one is full.
struct Pages {
    pages: Vec<Content>,
    y: f32,
}

impl Pages {
    fn new() -> Pages {
        Pages { pages: vec![Content::new()], y: PAGE_HEIGHT - 60.0 }
    }

    fn page(&mut self) -> &mut Content {
        self.pages.last_mut().expect("a page")
    }

    /// Room for `height` more points, on a new page if need be.
    fn room(&mut self, height: f32) {
        if self.y - height < BOTTOM {
            self.pages.push(Content::new());
            self.y = PAGE_HEIGHT - 60.0;
        }
    }

    fn text(&mut self, x: f32, font: Name<'static>, size: f32, text: &str) {
        let y = self.y;
        let page = self.page();
        page.begin_text();
        page.set_font(font, size);
        page.next_line(x, y);
        page.show(Str(&win_ansi(text)));
        page.end_text();
    }

    /// An amount whose right edge is at `right`.
    fn amount(&mut self, right: f32, font: Name<'static>, size: f32, text: &str) {
        self.text(right - amount_width(text, size), font, size, text);
    }

    fn rule(&mut self, width: f32) {
        let y = self.y;
        let page = self.page();
        page.set_line_width(width);
        page.move_to(LEFT, y);
        page.line_to(RIGHT, y);
        page.stroke();
    }

    fn down(&mut self, points: f32) {
        self.y -= points;
    }
}

/// Columns of the tables: description, detail, this period, year to date.
const DETAIL: f32 = 235.0;
const THIS_PERIOD: f32 = 440.0;
const YEAR_TO_DATE: f32 = RIGHT;

fn heading(pages: &mut Pages, title: &str) {
    pages.room(40.0);
    pages.down(22.0);
    pages.text(LEFT, BOLD, 11.0, title);
    pages.amount(THIS_PERIOD, BOLD, 9.0, "This period");
    pages.amount(YEAR_TO_DATE, BOLD, 9.0, "Year to date");
    pages.down(5.0);
    pages.rule(0.5);
    pages.down(13.0);
}

fn rule_lines(pages: &mut Pages, title: &str, lines: &[PayslipRuleLine], total: (&str, Decimal, Option<Decimal>)) {
    heading(pages, title);
    if lines.is_empty() {
        pages.text(LEFT, REGULAR, 10.0, "None");
        pages.down(14.0);
    }
    for line in lines {
        pages.room(14.0);
        pages.text(LEFT, REGULAR, 10.0, &line.name);
        pages.amount(THIS_PERIOD, REGULAR, 10.0, &amount(line.amount));
        if let Some(year_to_date) = line.year_to_date {
            pages.amount(YEAR_TO_DATE, REGULAR, 10.0, &amount(year_to_date));
        }
        pages.down(14.0);
    }
    pages.room(14.0);
    pages.text(LEFT, BOLD, 10.0, total.0);
    pages.amount(THIS_PERIOD, BOLD, 10.0, &amount(total.1));
    if let Some(year_to_date) = total.2 {
        pages.amount(YEAR_TO_DATE, BOLD, 10.0, &amount(year_to_date));
    }
    pages.down(4.0);
}

/// The payslip's pages.
fn lay_out(payslip: &PayslipView) -> Vec<Content> {
    let mut pages = Pages::new();
    let ytd = &payslip.year_to_date.totals;
    pages.text(LEFT, BOLD, 18.0, "Pay statement");
    pages.amount(RIGHT, REGULAR, 10.0, &format!("Pay date {}", payslip.pay_date));
    pages.down(16.0);
    pages.text(LEFT, REGULAR, 10.0, &payslip.employer.name);
    pages.down(6.0);
    pages.rule(1.0);
    pages.down(18.0);

    let employee_name = match (&payslip.employee.name, payslip.employee.personal_data_erased) {
        (_, true) => "(personal data erased)".to_owned(),
        (Some(name), false) => name.clone(),
        (None, false) => "(name not recorded)".to_owned(),
    };
    let run_kind = match &payslip.off_cycle_reason {
        Some(reason) => format!("Off-cycle: {reason}"),
        None => "Regular".to_owned(),
    };
    let facts: [(&str, String, &str, String); 4] = [
        ("Employee", employee_name, "Period", format!("{} to {}", payslip.period_start, payslip.period_end)),
        ("Employee id", payslip.employee.employee_id.to_string(), "Run", run_kind),
        ("Position", payslip.employee.position.clone(), "Currency", payslip.currency.clone()),
        ("Department", payslip.employee.department.clone(), "Status", payslip.status.replace('_', " ")),
    ];
    for (left_label, left, right_label, right) in facts {
        pages.text(LEFT, BOLD, 9.0, left_label);
        pages.text(LEFT + 70.0, REGULAR, 9.0, &left);
        pages.text(330.0, BOLD, 9.0, right_label);
        pages.text(385.0, REGULAR, 9.0, &right);
        pages.down(13.0);
    }
    if let Some(hold) = &payslip.hold_reason {
        pages.text(LEFT, BOLD, 9.0, &format!("Held: {hold}"));
        pages.down(13.0);
    }
    if let Some(failure) = &payslip.failure_reason {
        pages.text(LEFT, BOLD, 9.0, &format!("Payment failed: {failure}"));
        pages.down(13.0);
    }

    heading(&mut pages, "Earnings");
    for line in &payslip.earnings {
        pages.room(14.0);
        pages.text(LEFT, REGULAR, 10.0, &line.description);
        let detail = match (line.rate, &line.rate_basis, line.days) {
            (Some(rate), Some(basis), Some(days)) => format!("{days} days at {} {basis}", amount(rate)),
            (_, _, Some(days)) => format!("{days} days"),
            _ => String::new(),
        };
        pages.text(DETAIL, REGULAR, 9.0, &detail);
        pages.amount(THIS_PERIOD, REGULAR, 10.0, &amount(line.amount));
        pages.down(14.0);
    }
    pages.room(14.0);
    pages.text(LEFT, BOLD, 10.0, "Gross pay");
    pages.amount(THIS_PERIOD, BOLD, 10.0, &amount(payslip.gross));
    pages.amount(YEAR_TO_DATE, BOLD, 10.0, &amount(ytd.gross));
    pages.down(4.0);

    rule_lines(
        &mut pages,
        "Deductions",
        &payslip.deductions,
        ("Total deductions", payslip.deductions_total, Some(ytd.deductions)),
    );

    pages.room(60.0);
    pages.down(24.0);
    pages.rule(1.0);
    pages.down(18.0);
    pages.text(LEFT, BOLD, 13.0, "Net pay");
    pages.amount(THIS_PERIOD, BOLD, 13.0, &amount(payslip.net));
    pages.amount(YEAR_TO_DATE, BOLD, 10.0, &amount(ytd.net));
    pages.down(8.0);
    pages.rule(1.0);

    rule_lines(
        &mut pages,
        "Employer contributions",
        &payslip.contributions,
        ("Total employer contributions", payslip.contributions_total, Some(ytd.contributions)),
    );
    pages.room(14.0);
    pages.down(14.0);
    pages.text(LEFT, REGULAR, 10.0, "Cost to employer");
    pages.amount(THIS_PERIOD, REGULAR, 10.0, &amount(payslip.employer_cost));

    pages.room(80.0);
    pages.down(26.0);
    pages.text(LEFT, BOLD, 11.0, "Payment");
    pages.down(5.0);
    pages.rule(0.5);
    pages.down(13.0);
    match &payslip.payment {
        Some(payment) => {
            let wallet = payment.wallet_id.map_or_else(|| "-".to_owned(), |wallet| wallet.to_string());
            for (label, value) in [
                ("Wallet", wallet),
                ("Transaction", payment.transaction_id.to_string()),
                ("Status", payment.status.clone()),
                ("Recorded", payment.recorded_at.format("%Y-%m-%d %H:%M UTC").to_string()),
            ] {
                pages.text(LEFT, BOLD, 9.0, label);
                pages.text(LEFT + 70.0, REGULAR, 9.0, &value);
                pages.down(13.0);
            }
        }
        None => {
            pages.text(LEFT, REGULAR, 9.0, "Not paid yet.");
            pages.down(13.0);
        }
    }
    let tax_year = match ytd.tax_year_end {
        Some(end) => format!("{} to {end}", ytd.tax_year_start),
        None => format!("from {}", ytd.tax_year_start),
    };
    let included = if payslip.year_to_date.includes_this_payment { "including" } else { "not including" };
    pages.room(30.0);
    pages.down(16.0);
    pages.text(LEFT, REGULAR, 8.0, &format!("Year to date: tax year {tax_year}, {included} this payment."));
    pages.down(11.0);
    pages.text(
        LEFT,
        REGULAR,
        8.0,
        &format!("Payroll run {} - derived from the payroll ledger's events.", payslip.payroll_run_id),
    );
    pages.pages
}

/// The payslip as PDF bytes.
pub fn render(payslip: &PayslipView) -> Vec<u8> {
    let contents = lay_out(payslip);
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let regular = Ref::new(3);
    let bold = Ref::new(4);
    let info = Ref::new(5);
    let first_page = 6;
    let page_ids: Vec<Ref> = (0..contents.len()).map(|index| Ref::new(first_page + 2 * index as i32)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().copied()).count(page_ids.len() as i32);
    for (index, content) in contents.into_iter().enumerate() {
        let page_id = page_ids[index];
        let content_id = Ref::new(page_id.get() + 1);
        let mut page = pdf.page(page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
        page.parent(tree);
        page.contents(content_id);
        let mut resources = page.resources();
        resources.fonts().pair(REGULAR, regular).pair(BOLD, bold);
        resources.finish();
        page.finish();
        pdf.stream(content_id, &content.finish());
    }
    pdf.type1_font(regular).base_font(Name(b"Helvetica")).encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type1_font(bold).base_font(Name(b"Helvetica-Bold")).encoding_predefined(Name(b"WinAnsiEncoding"));
    let title = format!("Pay statement {} {}", payslip.pay_date, payslip.employee.employee_id);
    pdf.document_info(info).title(TextStr(&title)).producer(TextStr("payroll-ledger"));
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_grouped_by_thousands_and_keep_their_decimals() {
        let cases = [("0.00", "0.00"), ("999.5", "999.5"), ("1234567.50", "1,234,567.50"), ("-1000", "-1,000")];
        for (value, shown) in cases {
            assert_eq!(amount(value.parse().unwrap()), shown);
        }
    }

    #[test]
    fn text_outside_win_ansi_is_replaced_not_dropped() {
        assert_eq!(win_ansi("José Ωmega"), b"Jos\xe9 ?mega".to_vec());
    }
}
