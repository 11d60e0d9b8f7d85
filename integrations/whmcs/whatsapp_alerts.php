<?php
/**
 * WHMCS → WhatsApp alerts: forwards WHMCS's billing events to the bot's `POST /events`
 * (SPEC §4) as signed events, one per hook run. The bot turns each into one WhatsApp
 * message (SPEC §3 "Alerts").
 *
 * Install: copy this file into WHMCS's includes/hooks/ (WHMCS loads every file there) and
 * configure the two settings below — see integrations/whmcs/README.md.
 *
 * Settings: WHATSAPP_ALERTS_URL (the bot's events URL, https://bot.example.com/events) and
 * WHATSAPP_ALERTS_SECRET (the bot's EVENTS_SECRET). Define them in WHMCS's
 * configuration.php, which WHMCS includes before it loads hooks, so this file can be
 * replaced by a newer copy without editing it; or fill in the defaults below. While either
 * is empty nothing is sent and each event says so in the activity log.
 *
 * Hooks (input as WHMCS 8.7 passes it; https://developers.whmcs.com/hooks-reference/):
 * - ClientAdd → client.created: client_id (userid in older versions).
 * - ClientChangePassword (WHMCS 7, userid is the client; 8.7's source no longer runs it)
 *   and UserChangePassword (WHMCS 8: userid is a login, User::updatePassword, run right
 *   after the save) → client.password_changed, once for
 *   each client the user owns (tblusers_clients.owner). Both carry the new password: it
 *   is never read.
 * - ClientEdit → client.updated: userid, olddata and the new details; data names the
 *   fields that changed, never their values.
 * - InvoiceCreated, InvoicePaid, InvoiceCancelled → invoice.created / .paid / .cancelled:
 *   invoiceid only, so the client, total and due date come from tblinvoices.
 * - AfterModuleSuspend, AfterModuleUnsuspend, AfterModuleTerminate → service.suspended /
 *   .unsuspended / .terminated: params, the module's parameters (serviceid, userid,
 *   domain, addonId for an addon; also the service's and server's passwords, never read).
 * - QuoteCreated → quote.created: quoteid and status, so the client comes from tblquotes
 *   (a quote for a prospect, userid 0, has no one to alert).
 * - DomainDelete → domain.deleted: userid and domainid, run before the row is deleted, so
 *   the name comes from tbldomains.
 *
 * Event ids: "whmcs:<hook>:<record id>[:<discriminator>]", the same every time WHMCS runs
 * the hook again for the same change, so the bot stores and alerts it once:
 * - one-off records need no discriminator: ClientAdd (client), InvoiceCreated and
 *   InvoiceCancelled (invoice), QuoteCreated (quote), DomainDelete (domain);
 * - InvoicePaid: the invoice and its datepaid, so an invoice marked unpaid and paid again
 *   is a new payment;
 * - password changes: the client, the user and the login's updated_at (the change saves it
 *   just before the hook), so a second change is a new alert; anything else that touches
 *   the row before a rerun gives a duplicate alert, never a missing one;
 * - module actions: the service (and addon) and the UTC day, since WHMCS keeps no time of
 *   a suspension: the action redone the same day (an admin pressing Suspend again) is one
 *   alert, so is a second suspension after an unsuspension that day;
 * - ClientEdit: the client, the UTC day and the fields changed.
 *
 * Never in WHMCS's way: 2 s to connect and 2 s per read (one short answer), no retry, and
 * every failure — refused, not 202, a WHMCS lookup that threw — goes to the activity log
 * (logActivity) instead of being thrown. The bot answers 202 for a stored event and for a
 * repeated id alike.
 */

use WHMCS\Database\Capsule;

if (!defined('WHMCS')) {
    die('This file cannot be accessed directly');
}

if (!defined('WHATSAPP_ALERTS_URL')) {
    define('WHATSAPP_ALERTS_URL', '');
}
if (!defined('WHATSAPP_ALERTS_SECRET')) {
    define('WHATSAPP_ALERTS_SECRET', '');
}

const WHATSAPP_ALERTS_TIMEOUT_SECONDS = 2.0;

/** Runs one hook's forwarding; whatever goes wrong is logged, never thrown into WHMCS. */
function whatsapp_alerts_hook(string $hook, callable $events): callable
{
    return function ($vars) use ($hook, $events): void {
        try {
            foreach ($events(is_array($vars) ? $vars : []) as $event) {
                whatsapp_alerts_send($hook, $event);
            }
        } catch (\Throwable $e) {
            logActivity("WhatsApp alerts: $hook not forwarded: " . $e->getMessage());
        }
    };
}

/** One event in SPEC §4's shape; the occurrence is now, when WHMCS runs the hook. */
function whatsapp_alerts_event(string $id, string $type, $clientId, array $data): array
{
    return [
        'id' => $id,
        'type' => $type,
        'occurred_at' => gmdate('Y-m-d\TH:i:s\Z'),
        'client_id' => (string) $clientId,
        'data' => (object) $data,  // {} when empty, as SPEC's object
    ];
}

/** The invoice's client, total and due date, for the three invoice events. */
function whatsapp_alerts_invoice(string $hook, string $type, array $vars, bool $paid = false): array
{
    $invoiceId = (int) ($vars['invoiceid'] ?? 0);
    $invoice = Capsule::table('tblinvoices')->where('id', $invoiceId)->first();
    if ($invoice === null || !(int) $invoice->userid) {
        logActivity("WhatsApp alerts: $hook for invoice $invoiceId: no such invoice or client");
        return [];
    }
    $id = "whmcs:$hook:$invoiceId" . ($paid ? ':' . $invoice->datepaid : '');
    $data = [
        'invoice_id' => (string) $invoiceId,
        'total' => (string) $invoice->total,
        'due_date' => (string) $invoice->duedate,
    ];
    return [whatsapp_alerts_event($id, $type, $invoice->userid, $data)];
}

/** The service events: module parameters name the service, its client and its domain. */
function whatsapp_alerts_service(string $hook, string $type, array $vars): array
{
    $params = $vars['params'] ?? [];
    $serviceId = (int) ($params['serviceid'] ?? 0);
    $addonId = (int) ($params['addonId'] ?? 0);
    if (!$serviceId || !(int) ($params['userid'] ?? 0)) {
        logActivity("WhatsApp alerts: $hook without a service or client");
        return [];
    }
    $data = ['service_id' => (string) $serviceId, 'domain' => (string) ($params['domain'] ?? '')];
    $record = (string) $serviceId;
    if ($addonId) {
        $data['addon_id'] = (string) $addonId;
        $record .= "-addon$addonId";
    }
    $id = "whmcs:$hook:$record:" . gmdate('Y-m-d');
    return [whatsapp_alerts_event($id, $type, $params['userid'], $data)];
}

/** A password change, alerted to the client whose login it is. */
function whatsapp_alerts_password(string $hook, int $clientId, int $userId, string $changedAt): array
{
    $id = "whmcs:$hook:$clientId:$userId:$changedAt";
    return [whatsapp_alerts_event($id, 'client.password_changed', $clientId, [])];
}

/** Signs and posts one event; logs anything but a 202. */
function whatsapp_alerts_send(string $hook, array $event): void
{
    $what = "WhatsApp alerts: $hook event {$event['id']}";
    if (WHATSAPP_ALERTS_URL === '' || WHATSAPP_ALERTS_SECRET === '') {
        logActivity("$what not sent: WHATSAPP_ALERTS_URL or WHATSAPP_ALERTS_SECRET is not set");
        return;
    }
    $body = json_encode($event, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR);
    $signature = 'sha256=' . hash_hmac('sha256', $body, WHATSAPP_ALERTS_SECRET);
    // PHP's own HTTP client, so the file needs no extension: its timeout bounds the
    // connection and each read; the answer is one short JSON object.
    $context = stream_context_create([
        'http' => [
            'method' => 'POST',
            'header' => "Content-Type: application/json\r\nX-Signature-256: $signature\r\n"
                . "Connection: close\r\n",
            'content' => $body,
            'timeout' => WHATSAPP_ALERTS_TIMEOUT_SECONDS,
            'ignore_errors' => true,  // read the body of a 4xx/5xx too
            'follow_location' => 0,
        ],
    ]);
    $stream = @fopen(WHATSAPP_ALERTS_URL, 'rb', false, $context);
    if ($stream === false) {
        $error = error_get_last()['message'] ?? 'unknown error';
        logActivity("$what not sent: $error");
        return;
    }
    $answer = (string) stream_get_contents($stream, 500);
    $headers = stream_get_meta_data($stream)['wrapper_data'] ?? [];
    fclose($stream);
    $status = preg_match('#^HTTP/\S+ (\d{3})#', (string) ($headers[0] ?? ''), $m) ? (int) $m[1] : 0;
    if ($status !== 202) {
        logActivity("$what refused with HTTP $status: $answer");
    }
}

add_hook('ClientAdd', 1, whatsapp_alerts_hook('ClientAdd', function (array $vars): array {
    $clientId = (int) ($vars['client_id'] ?? $vars['userid'] ?? 0);
    return [whatsapp_alerts_event("whmcs:ClientAdd:$clientId", 'client.created', $clientId, [])];
}));

add_hook('ClientChangePassword', 1, whatsapp_alerts_hook('ClientChangePassword', function (array $vars): array {
    $clientId = (int) ($vars['userid'] ?? 0);
    $changedAt = (string) Capsule::table('tblclients')->where('id', $clientId)->value('updated_at');
    return whatsapp_alerts_password('ClientChangePassword', $clientId, 0, $changedAt);
}));

add_hook('UserChangePassword', 1, whatsapp_alerts_hook('UserChangePassword', function (array $vars): array {
    $userId = (int) ($vars['userid'] ?? 0);
    $changedAt = (string) Capsule::table('tblusers')->where('id', $userId)->value('updated_at');
    $events = [];
    $owned = Capsule::table('tblusers_clients')->where('auth_user_id', $userId)->where('owner', 1)->get();
    foreach ($owned as $link) {
        $events = array_merge(
            $events,
            whatsapp_alerts_password('UserChangePassword', (int) $link->client_id, $userId, $changedAt)
        );
    }
    if (!$events) {
        logActivity("WhatsApp alerts: UserChangePassword: user $userId owns no client to alert");
    }
    return $events;
}));

add_hook('ClientEdit', 1, whatsapp_alerts_hook('ClientEdit', function (array $vars): array {
    $clientId = (int) ($vars['userid'] ?? 0);
    $old = is_array($vars['olddata'] ?? null) ? $vars['olddata'] : [];
    $changed = [];
    foreach ($old as $field => $before) {
        $secret = preg_match('/pass|secret|token|hash|card|cc/i', (string) $field);
        if (!$secret && is_scalar($before) && array_key_exists($field, $vars)
            && is_scalar($vars[$field]) && (string) $before !== (string) $vars[$field]) {
            $changed[] = (string) $field;
        }
    }
    sort($changed);
    $id = "whmcs:ClientEdit:$clientId:" . gmdate('Y-m-d') . ':' . substr(sha1(implode(',', $changed)), 0, 12);
    return [whatsapp_alerts_event($id, 'client.updated', $clientId, ['changed' => $changed])];
}));

add_hook('InvoiceCreated', 1, whatsapp_alerts_hook('InvoiceCreated', function (array $vars): array {
    return whatsapp_alerts_invoice('InvoiceCreated', 'invoice.created', $vars);
}));

add_hook('InvoiceCancelled', 1, whatsapp_alerts_hook('InvoiceCancelled', function (array $vars): array {
    return whatsapp_alerts_invoice('InvoiceCancelled', 'invoice.cancelled', $vars);
}));

add_hook('InvoicePaid', 1, whatsapp_alerts_hook('InvoicePaid', function (array $vars): array {
    return whatsapp_alerts_invoice('InvoicePaid', 'invoice.paid', $vars, true);
}));

add_hook('AfterModuleSuspend', 1, whatsapp_alerts_hook('AfterModuleSuspend', function (array $vars): array {
    return whatsapp_alerts_service('AfterModuleSuspend', 'service.suspended', $vars);
}));

add_hook('AfterModuleUnsuspend', 1, whatsapp_alerts_hook('AfterModuleUnsuspend', function (array $vars): array {
    return whatsapp_alerts_service('AfterModuleUnsuspend', 'service.unsuspended', $vars);
}));

add_hook('AfterModuleTerminate', 1, whatsapp_alerts_hook('AfterModuleTerminate', function (array $vars): array {
    return whatsapp_alerts_service('AfterModuleTerminate', 'service.terminated', $vars);
}));

add_hook('QuoteCreated', 1, whatsapp_alerts_hook('QuoteCreated', function (array $vars): array {
    $quoteId = (int) ($vars['quoteid'] ?? 0);
    $clientId = (int) Capsule::table('tblquotes')->where('id', $quoteId)->value('userid');
    if (!$clientId) {
        return [];  // a quote for a prospect: no client, no WhatsApp number
    }
    $data = ['quote_id' => (string) $quoteId];
    return [whatsapp_alerts_event("whmcs:QuoteCreated:$quoteId", 'quote.created', $clientId, $data)];
}));

add_hook('DomainDelete', 1, whatsapp_alerts_hook('DomainDelete', function (array $vars): array {
    $domainId = (int) ($vars['domainid'] ?? 0);
    $clientId = (int) ($vars['userid'] ?? 0);
    if (!$clientId) {
        logActivity("WhatsApp alerts: DomainDelete for domain $domainId without a client");
        return [];
    }
    $domain = (string) Capsule::table('tbldomains')->where('id', $domainId)->value('domain');
    $data = ['domain_id' => (string) $domainId, 'domain' => $domain];
    return [whatsapp_alerts_event("whmcs:DomainDelete:$domainId", 'domain.deleted', $clientId, $data)];
}));
