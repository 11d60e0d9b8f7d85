<?php
/**
 * The help page's upgrade price, in WHMCS: the new package's price for the chosen billing
 * cycle minus what the customer already paid for the current period, never below zero.
 * "Paid 100 a year, upgrades mid-year to a 150 plan: 50." The bot quotes the same rule
 * when UPGRADE_PRICING=difference (flows/pricing.py, `difference`).
 *
 * Install: copy this file into WHMCS's includes/hooks/ (WHMCS loads every file there).
 *
 * Why OrderProductUpgradeOverride: WHMCS runs it inside SumUpPackageUpgradeOrder, the one
 * calculation behind every package upgrade: UpgradeProduct with calconly (the quote the
 * bot checks), the real UpgradeProduct (the order and its invoice), the client area's
 * upgrade page and the admin area's upgrade dialog. So the amount WHMCS shows is the
 * amount it invoices. (PreUpgradeCheckout runs at checkout only: a calculation would
 * still show WHMCS's pro-rata.)
 *
 * The hook's contract, https://developers.whmcs.com/hooks-reference/shopping-cart/#orderproductupgradeoverride
 * as WHMCS 8.7's includes/upgradefunctions.php runs it:
 * - input: oldproductid, oldproductname, newproductid, newproductname, daysuntilrenewal
 *   (the page calls it "days"), totaldays, newproductbillingcycle (as the caller wrote
 *   it: "annually", "Semi-Annually"…), price (WHMCS's pro-rata, before any promotion
 *   discount), discount, promoqualifies. Nothing names the service.
 * - output: the keys to override. We return `price`, and `discount` only to keep a
 *   promotion from exceeding that price. WHMCS adds tax after the hook.
 *
 * Which service: read from the request, since the input does not say: `serviceid` for the
 * API's UpgradeProduct, `id` for the client area's upgrade.php and the admin area's
 * upgrade dialog. It must be a service of `oldproductid`. When it cannot be found, WHMCS's
 * own price stands and the activity log says why; the bot then warns that WHMCS's
 * calculation differs from its quote.
 *
 * "What the customer already paid for the current period" is the service's recurring
 * amount, tblhosting.amount: what WHMCS bills for each period of the service's cycle,
 * which is the page's "100 a year". It is also the `recurringamount` the bot quotes from
 * (GetClientsProducts), so the quote and the invoice come from the same number. The last
 * paid invoice item for the service was not used: a service's first invoice may be
 * pro-rated or carry a setup fee or a one-off promotion, and a service whose renewal is
 * unpaid has last paid for the previous period.
 *
 * The new price is the package's tblpricing row in the client's currency for the chosen
 * cycle (GetProducts' price, the one the bot quotes), without configurable options (the
 * bot's quote has none). A service billed One Time or Free Account, or a one-time or free
 * new cycle, keeps WHMCS's own calculation: the rule needs a recurring period.
 *
 * Amounts are whole cents (integers): WHMCS stores them as decimal(16,2).
 *
 * The period, on AfterProductUpgrade: the help page's rule also says the new plan's period
 * starts on the day it is enabled, so the bot quotes next due = that day + the new cycle
 * (flows/pricing.py, `difference`). WHMCS keeps the old next due date instead, so without
 * this the customer would be told one date and renewed on another. As WHMCS 8.7's
 * includes/upgradefunctions.php runs it:
 * - an upgrade order is a tblupgrades row: type 'package', relid the service, newvalue
 *   "<product id>,<cycle>" (line 275, SumUpPackageUpgradeOrder at checkout);
 * - doUpgrade applies it when its invoice is paid (processUpgradePayment, lines 650-654,
 *   called for an "Upgrade" invoice item by processPaidInvoice, includes/invoicefunctions.php
 *   lines 443-447) or at once when there is nothing to pay (lines 310-311);
 * - for type 'package' doUpgrade saves the service on its new package and cycle (line 727)
 *   and only then runs AfterProductUpgrade with ["upgradeid"] (line 749). It touches the
 *   due dates only of a service that was One Time or Free Account (lines 710-715); any
 *   other keeps its old next due date. Its later save of the same service (line 849) writes
 *   only the attributes it changed (Eloquent's performUpdate saves getDirty()), not ours.
 * So the hook reads tblupgrades, and for a 'package' upgrade whose service is now on a
 * recurring cycle sets tblhosting.nextduedate and nextinvoicedate to today + that cycle's
 * months, clamped to the month's end like flows.pricing.add_months (Jan 31 + 1 month =
 * Feb 28; WHMCS's own getInvoicePayUntilDate rolls over with mktime: Mar 3). The service
 * now on One Time or Free Account has no period; configoptions upgrades keep the package's
 * period; type 'service' (the same hook, line 828) is WHMCS's newer upgrade, which already
 * restarts the period itself (line 779): all left as WHMCS made them. "Today" is
 * WHMCS\Carbon::today(), on the clock doUpgrade's date("Y-m-d") reads.
 */

namespace HostingWhatsAppBot\Whmcs;

use WHMCS\Database\Capsule;

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

/** WHMCS's recurring billing cycles, as tblpricing names its columns, and their months. */
const CYCLE_MONTHS = [
    'monthly' => 1,
    'quarterly' => 3,
    'semiannually' => 6,
    'annually' => 12,
    'biennially' => 24,
    'triennially' => 36,
];

add_hook('OrderProductUpgradeOverride', 1, function (array $vars): array {
    return upgradeDifference($vars);
});

add_hook('AfterProductUpgrade', 1, function (array $vars): void {
    restartPeriod((int) $vars['upgradeid']);
});

/**
 * The overrides for one package upgrade: an empty array leaves WHMCS's calculation alone.
 */
function upgradeDifference(array $vars): array
{
    $service = upgradedService((int) $vars['oldproductid']);
    if ($service === null) {
        return [];
    }
    $newCycle = recurringCycle((string) $vars['newproductbillingcycle']);
    if ($newCycle === null || recurringCycle((string) $service->billingcycle) === null) {
        return [];
    }
    $currency = Capsule::table('tblclients')->where('id', $service->userid)->value('currency');
    $newPrice = Capsule::table('tblpricing')
        ->where('type', 'product')
        ->where('currency', $currency)
        ->where('relid', (int) $vars['newproductid'])
        ->value($newCycle);
    if ($newPrice === null || cents($newPrice) < 0) {  // -1.00: the cycle is not sold
        logActivity(sprintf(
            'Upgrade difference hook: product %d has no %s price in currency %s; WHMCS\'s own upgrade price stands',
            (int) $vars['newproductid'],
            $newCycle,
            (string) $currency
        ));
        return [];
    }
    $price = max(0, cents($newPrice) - cents($service->amount));
    $overrides = ['price' => round($price / 100, 2)];
    if (cents($vars['discount'] ?? 0) > $price) {
        $overrides['discount'] = round($price / 100, 2);
    }
    return $overrides;
}

/**
 * The service being upgraded (its tblhosting row), or null.
 */
function upgradedService(int $oldProductId): ?object
{
    $serviceId = (int) (\App::getFromRequest('serviceid') ?: \App::getFromRequest('id'));
    $service = $serviceId > 0
        ? Capsule::table('tblhosting')->where('id', $serviceId)->first()
        : null;
    if ($service === null || (int) $service->packageid !== $oldProductId) {
        logActivity(sprintf(
            'Upgrade difference hook: the request names no service of product %d (service id %d); WHMCS\'s own upgrade price stands',
            $oldProductId,
            $serviceId
        ));
        return null;
    }
    return $service;
}

/**
 * A billing cycle as WHMCS writes it ("Semi-Annually", "annually") in tblpricing's
 * spelling, or null for one that is not recurring (One Time, Free Account).
 */
function recurringCycle(string $cycle): ?string
{
    $name = strtolower(str_replace(['-', ' '], '', $cycle));
    return array_key_exists($name, CYCLE_MONTHS) ? $name : null;
}

/**
 * A package upgrade WHMCS has just applied: the service's period starts today. Anything
 * else is left as WHMCS made it.
 */
function restartPeriod(int $upgradeId): void
{
    $upgrade = Capsule::table('tblupgrades')->where('id', $upgradeId)->first();
    if ($upgrade === null || $upgrade->type !== 'package') {
        return;
    }
    $service = Capsule::table('tblhosting')->where('id', $upgrade->relid)->first();
    $cycle = $service === null ? null : recurringCycle((string) $service->billingcycle);
    if ($cycle === null) {
        return;
    }
    $nextDue = addMonths(\WHMCS\Carbon::today()->toDateString(), CYCLE_MONTHS[$cycle]);
    Capsule::table('tblhosting')->where('id', $service->id)->update([
        'nextduedate' => $nextDue,
        'nextinvoicedate' => $nextDue,
    ]);
    logActivity(sprintf(
        'Upgrade difference hook: upgrade %d applied, the %s period of service %d starts today: next due date %s (was %s)',
        $upgradeId,
        $cycle,
        (int) $service->id,
        $nextDue,
        (string) $service->nextduedate
    ), (int) $service->userid);
}

/** A day ("2026-01-31") `$months` later, clamped to the month's end: "2026-02-28". */
function addMonths(string $day, int $months): string
{
    [$year, $month, $dayOfMonth] = array_map('intval', explode('-', $day));
    $index = $month - 1 + $months;
    $year += intdiv($index, 12);
    $month = $index % 12 + 1;
    $last = (int) (new \DateTimeImmutable(sprintf('%04d-%02d-01', $year, $month)))->format('t');
    return sprintf('%04d-%02d-%02d', $year, $month, min($dayOfMonth, $last));
}

/** An amount ("100.00", 100, 99.5) in whole cents. */
function cents($amount): int
{
    return (int) round(((float) $amount) * 100);
}
