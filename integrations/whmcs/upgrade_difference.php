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
 */

namespace HostingWhatsAppBot\Whmcs;

use WHMCS\Database\Capsule;

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

/** WHMCS's recurring billing cycles, as tblpricing names its columns. */
const RECURRING_CYCLES = ['monthly', 'quarterly', 'semiannually', 'annually', 'biennially', 'triennially'];

add_hook('OrderProductUpgradeOverride', 1, function (array $vars): array {
    return upgradeDifference($vars);
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
    return in_array($name, RECURRING_CYCLES, true) ? $name : null;
}

/** An amount ("100.00", 100, 99.5) in whole cents. */
function cents($amount): int
{
    return (int) round(((float) $amount) * 100);
}
