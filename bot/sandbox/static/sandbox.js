// Phone simulator of the WhatsApp bot sandbox.
//
// Every piece of message text reaches the page through textContent or createTextNode,
// never innerHTML: whatever the bot or the customer writes stays text.
"use strict";

(() => {
  const POLL_MS = 700;
  // The billing panel refreshes on its own too: the bot changes billing as well (an
  // upgrade it places generates an invoice and an event).
  const BILLING_POLL_MS = 2000;
  const STATUS_LABELS = {
    active: "activo",
    suspended: "suspendido",
    pending: "pendiente",
    cancelled: "cancelado",
    terminated: "dado de baja",
  };
  const CYCLE_LABELS = {
    monthly: "mensual",
    quarterly: "trimestral",
    semiannually: "semestral",
    annually: "anual",
    biennially: "bienal",
    triennially: "trienal",
  };
  const INVOICE_STATUS_LABELS = { unpaid: "impaga", paid: "pagada", cancelled: "anulada" };
  // SPEC §3: each event type and the help page's name for its alert.
  const EVENT_NAMES = {
    "client.created": "Ingresa un cliente (bienvenida)",
    "client.password_changed": "Si cambia la clave",
    "invoice.created": "Generación de factura",
    "client.updated": "Cliente edita sus propios datos",
    "invoice.cancelled": "Factura anulada",
    "invoice.paid": "Pago de factura",
    "service.suspended": "Servicio suspendido",
    "service.unsuspended": "Servicio reactivado",
    "service.terminated": "Servicio dado de baja",
    "quote.created": "Presupuesto disponible",
    "domain.deleted": "Dominio borrado",
  };
  // The ticks' meaning, for the bot's messages (as Meta reported them) and the
  // customer's own (phone.py's _customer_status says what each one means there).
  const TICK_TITLES = {
    out: {
      sent: "Enviado",
      delivered: "Entregado",
      read: "Leído",
      failed: "No se pudo entregar",
    },
    in: {
      sent: "Enviado",
      delivered: "Entregado al bot",
      read: "Leído: el bot lo procesó",
      rejected: "El webhook no lo aceptó",
      unhandled: "El bot no pudo procesarlo",
    },
  };
  const TICK_ERRORS = new Set(["failed", "rejected", "unhandled"]);

  const $ = (id) => document.getElementById(id);
  const els = {
    customers: $("customer-list"),
    chat: $("chat"),
    subtitle: $("chat-subtitle"),
    form: $("composer"),
    message: $("message"),
    send: $("send"),
    sticker: $("send-sticker"),
    location: $("send-location"),
    error: $("send-error"),
    sheet: $("sheet"),
    sheetTitle: $("sheet-title"),
    sheetBody: $("sheet-body"),
    billingEmpty: $("billing-empty"),
    billingBody: $("billing-body"),
    billingClient: $("billing-client"),
    billingError: $("billing-error"),
    services: $("billing-services"),
    invoices: $("billing-invoices"),
    domains: $("billing-domains"),
    events: $("billing-events"),
    quoteForm: $("quote-form"),
    quoteTotal: $("quote-total"),
    quoteSubject: $("quote-subject"),
    quoteDone: $("quote-done"),
  };

  const state = {
    customer: null, // {wa_id, name, client_id}; client_id is null for the unknown number
    card: null, // the selected customer's card
    last: 0, // highest transcript seq shown
    generation: 0, // bumps on every customer change; stale answers are dropped
    polling: false,
    timer: null,
    ticks: new Map(), // message id -> tick element
    billing: {
      shown: null, // the JSON last rendered: unchanged answers are not re-rendered
      seenEvents: null, // event ids already shown; null before the first render
      polling: false,
      timer: null,
      changes: 0, // bumps on every action: a poll that started before one is stale
    },
  };

  // --- small DOM helpers ----------------------------------------------------------

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  // --- WhatsApp formatting: *bold* _italic_ ~strike~ ```mono``` and links ------------

  const INLINE = new RegExp(
    [
      "```([^`]+?)```",
      "(?<![\\p{L}\\p{N}*])\\*([^*\\s](?:[^*]*?[^*\\s])?)\\*(?![\\p{L}\\p{N}*])",
      "(?<![\\p{L}\\p{N}_])_([^_\\s](?:[^_]*?[^_\\s])?)_(?![\\p{L}\\p{N}_])",
      "(?<![\\p{L}\\p{N}~])~([^~\\s](?:[^~]*?[^~\\s])?)~(?![\\p{L}\\p{N}~])",
      "(https?:\\/\\/[^\\s<>\"]+)",
    ].join("|"),
    "gu",
  );

  function appendInline(parent, text) {
    let at = 0;
    INLINE.lastIndex = 0;
    for (const match of text.matchAll(INLINE)) {
      if (match.index > at) parent.appendChild(document.createTextNode(text.slice(at, match.index)));
      const [whole, mono, bold, italic, strike, url] = match;
      if (mono !== undefined) {
        parent.appendChild(el("code", null, mono));
      } else if (bold !== undefined) {
        const node = el("strong");
        appendInline(node, bold);
        parent.appendChild(node);
      } else if (italic !== undefined) {
        const node = el("em");
        appendInline(node, italic);
        parent.appendChild(node);
      } else if (strike !== undefined) {
        const node = el("s");
        appendInline(node, strike);
        parent.appendChild(node);
      } else if (url !== undefined) {
        // Trailing punctuation belongs to the sentence, not to the address.
        const trimmed = url.replace(/[.,;:!?)]+$/u, "");
        const link = el("a", null, trimmed);
        link.href = trimmed;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        parent.appendChild(link);
        if (trimmed.length < url.length) {
          parent.appendChild(document.createTextNode(url.slice(trimmed.length)));
        }
      }
      at = match.index + whole.length;
    }
    if (at < text.length) parent.appendChild(document.createTextNode(text.slice(at)));
  }

  function formatted(text, className) {
    const node = el("div", className || "text");
    String(text || "").split("\n").forEach((line, i) => {
      if (i > 0) node.appendChild(el("br"));
      appendInline(node, line);
    });
    return node;
  }

  // --- customers ------------------------------------------------------------------

  async function loadCustomers() {
    let data;
    try {
      const response = await fetch("/sandbox/api/customers");
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      data = await response.json();
    } catch (error) {
      clear(els.customers);
      els.customers.appendChild(el("li", "muted", `No se pudieron cargar los clientes (${error.message}).`));
      return;
    }
    clear(els.customers);
    for (const customer of data.customers) els.customers.appendChild(customerCard(customer));
    els.customers.appendChild(unknownCard(data.unknown));
  }

  function customerCard(customer) {
    const item = el("li");
    const card = el("button", "customer");
    card.type = "button";
    card.dataset.waId = customer.wa_id || "";
    card.setAttribute("aria-pressed", "false");

    const name = el("span", "name", customer.name);
    const badge = el("span", customer.verified ? "badge" : "badge warn",
      customer.verified ? "verificada" : "sin verificar");
    name.appendChild(badge);
    card.appendChild(name);
    card.appendChild(el("span", "wa", customer.wa_id ? `WhatsApp +${customer.wa_id}` : "Sin WhatsApp válido"));
    card.appendChild(el("span", "line", `Teléfono en la cuenta: ${customer.phone || "—"}`));
    card.appendChild(el("span", "line", customer.email));
    if (customer.services.length) card.appendChild(servicesList(customer.services));
    if (customer.wa_id) {
      card.addEventListener("click", () => select({ wa_id: customer.wa_id, name: customer.name, client_id: customer.id }, card));
    } else {
      card.disabled = true;
    }
    item.appendChild(card);
    return item;
  }

  function servicesList(services) {
    const list = el("ul", "services");
    for (const service of services) {
      const row = el("li", null, `${service.label} — ${service.product} · `);
      row.appendChild(statusLabel(service.status));
      list.appendChild(row);
    }
    return list;
  }

  function statusLabel(status) {
    return el("span", `status-${status}`, STATUS_LABELS[status] || status);
  }

  function unknownCard(unknown) {
    const item = el("li");
    const card = el("button", "customer unknown");
    card.type = "button";
    card.dataset.waId = unknown.wa_id;
    card.setAttribute("aria-pressed", "false");
    card.appendChild(el("span", "name", unknown.name));
    card.appendChild(el("span", "wa", `WhatsApp +${unknown.wa_id}`));
    card.appendChild(el("span", "line", "No está en ninguna cuenta: así responde el bot a un desconocido."));
    card.addEventListener("click", () => select({ wa_id: unknown.wa_id, name: "Visitante", client_id: null }, card, unknown.name));
    item.appendChild(card);
    return item;
  }

  function select(customer, card, label) {
    for (const other of els.customers.querySelectorAll(".customer")) {
      other.setAttribute("aria-pressed", other === card ? "true" : "false");
    }
    state.customer = customer;
    state.card = card;
    state.last = 0;
    state.generation += 1;
    state.ticks.clear();
    closeSheet();
    clear(els.chat);
    els.subtitle.textContent = `Escribe ${label || customer.name} · +${customer.wa_id}`;
    showError(null);
    for (const control of [els.message, els.send, els.sticker, els.location]) control.disabled = false;
    els.message.focus();
    schedulePoll(0);
    resetBilling();
  }

  // --- sending --------------------------------------------------------------------

  async function send(payload) {
    if (!state.customer) return false;
    const generation = state.generation;
    showError(null);
    try {
      const response = await fetch("/sandbox/api/send", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ wa_id: state.customer.wa_id, name: state.customer.name, ...payload }),
      });
      const data = await response.json().catch(() => ({}));
      if (!response.ok && generation === state.generation) {
        showError(`No se pudo enviar: ${data.error || `HTTP ${response.status}`}`);
      }
    } catch (error) {
      if (generation === state.generation) showError(`No se pudo enviar: ${error.message}`);
      return false;
    }
    schedulePoll(0);
    return true;
  }

  function showError(message) {
    els.error.hidden = !message;
    els.error.textContent = message || "";
  }

  async function sendTyped() {
    const text = els.message.value;
    if (!text.trim()) return;
    els.message.value = "";
    autosize();
    if (!(await send({ text }))) els.message.value = text;
  }

  function autosize() {
    els.message.style.height = "auto";
    els.message.style.height = `${Math.min(els.message.scrollHeight, 120)}px`;
  }

  // --- receiving ------------------------------------------------------------------

  function schedulePoll(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(poll, delay);
  }

  async function poll() {
    if (!state.customer) return;
    if (state.polling) {
      schedulePoll(POLL_MS);
      return;
    }
    state.polling = true;
    const generation = state.generation;
    try {
      const query = new URLSearchParams({ wa_id: state.customer.wa_id, after: String(state.last) });
      const response = await fetch(`/sandbox/api/messages?${query}`);
      if (response.ok) {
        const data = await response.json();
        if (generation === state.generation) {
          for (const message of data.messages) {
            if (message.seq > state.last) {
              render(message);
              state.last = message.seq;
            }
          }
          updateTicks(data.statuses);
        }
      }
    } catch (error) {
      // The server restarting: the next poll tries again.
    } finally {
      state.polling = false;
      if (generation === state.generation) schedulePoll(POLL_MS);
    }
  }

  function updateTicks(statuses) {
    for (const [id, status] of Object.entries(statuses || {})) {
      const tick = state.ticks.get(id);
      if (tick) setTick(tick, status);
    }
  }

  function setTick(tick, status) {
    tick.className = "ticks";
    tick.title = TICK_TITLES[tick.dataset.direction][status] || status;
    tick.setAttribute("aria-label", tick.title);
    if (status === "read") tick.classList.add("read");
    if (TICK_ERRORS.has(status)) {
      tick.textContent = "⚠";
      tick.classList.add("failed");
    } else if (status === "delivered" || status === "read") {
      tick.textContent = "✓✓";
    } else {
      tick.textContent = "✓";
    }
  }

  function render(message) {
    const nearBottom = els.chat.scrollHeight - els.chat.scrollTop - els.chat.clientHeight < 80;
    const bubble = message.direction === "in" ? customerBubble(message) : botBubble(message);
    bubble.dataset.seq = String(message.seq);
    const meta = el("div", "meta");
    const at = new Date(message.at);
    meta.appendChild(el("span", "time", at.toLocaleTimeString("es-AR", { hour: "2-digit", minute: "2-digit" })));
    // Named for assistive technology: "✓✓" alone says nothing.
    const tick = el("span", "ticks", "🕓");
    tick.dataset.direction = message.direction;
    tick.setAttribute("role", "img");
    tick.title = "Pendiente";
    tick.setAttribute("aria-label", tick.title);
    meta.appendChild(tick);
    state.ticks.set(message.id, tick);
    // The bubble's buttons stay last, as in WhatsApp; the time goes above them.
    const actions = bubble.querySelector(".choices, .list-open");
    bubble.insertBefore(meta, actions);
    els.chat.appendChild(bubble);
    if (nearBottom || message.direction === "in") els.chat.scrollTop = els.chat.scrollHeight;
  }

  function customerBubble(message) {
    const bubble = el("div", "bubble me");
    if (message.kind === "sticker") {
      bubble.appendChild(el("div", "note", "[Sticker]"));
    } else if (message.kind === "location") {
      bubble.appendChild(el("div", "note", "[Ubicación compartida]"));
    } else {
      bubble.appendChild(formatted(message.text));
    }
    return bubble;
  }

  function botBubble(message) {
    const bubble = el("div", "bubble bot");
    const body = message.body || {};
    switch (message.type) {
      case "text":
        bubble.appendChild(formatted(body.text && body.text.body));
        break;
      case "interactive":
        renderInteractive(bubble, body.interactive || {}, message.id);
        break;
      case "template":
        renderTemplate(bubble, body.template || {});
        break;
      default: {
        const content = body[message.type] || {};
        const caption = content.caption ? `: ${content.caption}` : "";
        bubble.appendChild(el("div", "note", `[${message.type}${caption}]`));
      }
    }
    return bubble;
  }

  // A tap quotes the message it belongs to (`context`), as WhatsApp does: the bot
  // answers a button of an older message by showing the current options again.
  function renderInteractive(bubble, interactive, messageId) {
    const header = interactive.header;
    if (header && header.type === "text") bubble.appendChild(formatted(header.text, "header"));
    if (interactive.body) bubble.appendChild(formatted(interactive.body.text));
    if (interactive.footer) bubble.appendChild(formatted(interactive.footer.text, "footer"));
    const action = interactive.action || {};
    if (interactive.type === "button") {
      const choices = el("div", "choices");
      for (const button of action.buttons || []) {
        const reply = button.reply || {};
        const tap = el("button", "choice-button", reply.title);
        tap.type = "button";
        tap.addEventListener("click", () => send({ button_reply: { id: reply.id, title: reply.title }, context: messageId }));
        choices.appendChild(tap);
      }
      bubble.appendChild(choices);
    } else if (interactive.type === "list") {
      const open = el("button", "list-open", `☰ ${action.button || "Ver opciones"}`);
      open.type = "button";
      open.setAttribute("aria-label", action.button || "Ver opciones");
      open.addEventListener("click", () => openSheet(action, messageId));
      bubble.appendChild(open);
    } else if (interactive.type === "cta_url") {
      const parameters = action.parameters || {};
      if (/^https?:\/\//u.test(parameters.url || "")) {
        const link = el("a", "list-open", parameters.display_text || parameters.url);
        link.href = parameters.url;
        link.target = "_blank";
        link.rel = "noopener noreferrer";
        bubble.appendChild(link);
      }
    } else {
      bubble.appendChild(el("div", "note", `[mensaje interactivo: ${interactive.type}]`));
    }
  }

  function renderTemplate(bubble, template) {
    const card = el("div", "template-card");
    card.appendChild(el("div", "label", "Plantilla"));
    const language = template.language && template.language.code ? ` (${template.language.code})` : "";
    card.appendChild(el("strong", null, `${template.name}${language}`));
    for (const component of template.components || []) {
      const parameters = component.parameters || [];
      if (!parameters.length) continue;
      card.appendChild(el("div", "label", component.type === "body" ? "Parámetros" : component.type));
      const list = el("ol");
      for (const parameter of parameters) {
        const value = parameter.text ?? parameter.payload
          ?? (parameter.currency && parameter.currency.fallback_value)
          ?? (parameter.date_time && parameter.date_time.fallback_value)
          ?? `[${parameter.type}]`;
        list.appendChild(el("li", null, value));
      }
      card.appendChild(list);
    }
    bubble.appendChild(card);
  }

  // --- list sheet -----------------------------------------------------------------

  function openSheet(action, messageId) {
    els.sheetTitle.textContent = action.button || "Opciones";
    clear(els.sheetBody);
    for (const section of action.sections || []) {
      if (section.title) els.sheetBody.appendChild(el("div", "sheet-section-title", section.title));
      for (const row of section.rows || []) {
        const tap = el("button", "row-button");
        tap.type = "button";
        tap.appendChild(el("span", "row-title", row.title));
        if (row.description) tap.appendChild(el("span", "row-description", row.description));
        tap.addEventListener("click", () => {
          closeSheet();
          const reply = { id: row.id, title: row.title };
          if (row.description) reply.description = row.description;
          send({ list_reply: reply, context: messageId });
        });
        els.sheetBody.appendChild(tap);
      }
    }
    els.sheet.hidden = false;
    const first = els.sheetBody.querySelector("button");
    if (first) first.focus();
  }

  function closeSheet() {
    els.sheet.hidden = true;
  }

  // --- billing panel: the billing system's staff side -------------------------------

  function billingUrl(path) {
    const base = `/sandbox/api/billing/${encodeURIComponent(state.customer.client_id)}`;
    return path ? `${base}/${path}` : base;
  }

  function resetBilling() {
    const billing = state.billing;
    clearTimeout(billing.timer);
    billing.shown = null;
    billing.seenEvents = null;
    showBillingError(null);
    els.quoteDone.textContent = "";
    const hasAccount = Boolean(state.customer && state.customer.client_id);
    els.billingBody.hidden = !hasAccount;
    els.billingEmpty.hidden = hasAccount;
    if (!hasAccount) {
      els.billingEmpty.textContent = "Este número no está en ninguna cuenta: no tiene datos de facturación.";
      return;
    }
    for (const list of [els.services, els.invoices, els.domains, els.events]) clear(list);
    els.billingClient.textContent = `Cargando la facturación de ${state.customer.name}…`;
    scheduleBillingPoll(0);
  }

  function scheduleBillingPoll(delay) {
    clearTimeout(state.billing.timer);
    state.billing.timer = setTimeout(pollBilling, delay);
  }

  async function pollBilling() {
    if (!state.customer || !state.customer.client_id) return;
    const billing = state.billing;
    if (billing.polling) {
      scheduleBillingPoll(BILLING_POLL_MS);
      return;
    }
    billing.polling = true;
    const generation = state.generation;
    const changes = billing.changes;
    try {
      const response = await fetch(billingUrl());
      const data = await response.json().catch(() => ({}));
      if (generation === state.generation && changes === billing.changes) {
        if (response.ok) renderBilling(data);
        else showBillingError(`No se pudo leer la facturación: ${data.error || `HTTP ${response.status}`}`);
      }
    } catch (error) {
      // The server restarting: the next poll tries again.
    } finally {
      billing.polling = false;
      if (generation === state.generation) scheduleBillingPoll(BILLING_POLL_MS);
    }
  }

  // POST one staff action; the answer carries the customer's state after it.
  async function billingAction(path, body, button) {
    if (!state.customer || !state.customer.client_id) return null;
    const generation = state.generation;
    state.billing.changes += 1;
    showBillingError(null);
    if (button) button.disabled = true;
    try {
      const response = await fetch(billingUrl(path), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body || {}),
      });
      const data = await response.json().catch(() => ({}));
      if (generation !== state.generation) return null;
      if (!response.ok) {
        showBillingError(`No se pudo: ${data.error || `HTTP ${response.status}`}`);
        return null;
      }
      renderBilling(data);
      return data;
    } catch (error) {
      if (generation === state.generation) showBillingError(`No se pudo: ${error.message}`);
      return null;
    } finally {
      state.billing.changes += 1;
      if (button && button.isConnected) button.disabled = false;
    }
  }

  function showBillingError(message) {
    els.billingError.hidden = !message;
    els.billingError.textContent = message || "";
  }

  function renderBilling(data) {
    const { done, ...current } = data;
    const json = JSON.stringify(current);
    if (json === state.billing.shown) return;
    state.billing.shown = json;
    const client = current.client;
    els.billingClient.textContent = `${client.name} · cliente ${client.id} · ${client.email}`;
    renderServices(current.services);
    renderInvoices(current.invoices);
    renderDomains(current.domains);
    renderEvents(current.events);
    renderFireButtons();
    // The customer's card on the left shows the services' new statuses too.
    if (state.card) {
      const old = state.card.querySelector(".services");
      const fresh = current.services.length ? servicesList(current.services) : null;
      if (old && fresh) old.replaceWith(fresh);
      else if (old) old.remove();
      else if (fresh) state.card.appendChild(fresh);
    }
  }

  function money(amount) {
    return `${amount} $`;
  }

  function actionButton(text, label, onClick, className) {
    const button = el("button", `panel-button${className ? ` ${className}` : ""}`, text);
    button.type = "button";
    button.setAttribute("aria-label", label);
    button.title = label;
    button.addEventListener("click", () => onClick(button));
    return button;
  }

  function emptyRow(tbody, columns, text) {
    const row = el("tr", "empty");
    const cell = el("td", "muted", text);
    cell.colSpan = columns;
    row.appendChild(cell);
    tbody.appendChild(row);
  }

  function renderServices(services) {
    clear(els.services);
    if (!services.length) {
      els.services.appendChild(el("li", "muted", "Sin servicios."));
      return;
    }
    for (const service of services) {
      const card = el("li", "billing-card");
      card.dataset.serviceId = service.id;
      const head = el("div", "card-head");
      head.appendChild(el("strong", null, service.label));
      head.appendChild(statusLabel(service.status));
      card.appendChild(head);
      const cycle = CYCLE_LABELS[service.cycle] || service.cycle;
      card.appendChild(el("div", "line", `${service.product} · ${cycle} · ${money(service.amount)}`));
      card.appendChild(el("div", "line", `Próximo vencimiento: ${service.next_due || "—"}`));
      const actions = el("div", "card-actions");
      const path = `services/${encodeURIComponent(service.id)}`;
      const act = (action) => (button) => billingAction(`${path}/${action}`, {}, button);
      if (service.status === "active") {
        actions.appendChild(actionButton("Suspender", `Suspender ${service.label}`, act("suspend")));
      }
      if (service.status === "suspended") {
        actions.appendChild(actionButton("Reactivar", `Reactivar ${service.label}`, act("unsuspend")));
      }
      if (service.status !== "terminated") {
        actions.appendChild(actionButton("Dar de baja", `Dar de baja ${service.label}`, act("terminate"), "danger"));
      }
      card.appendChild(actions);
      els.services.appendChild(card);
    }
  }

  function renderInvoices(invoices) {
    clear(els.invoices);
    if (!invoices.length) {
      emptyRow(els.invoices, 5, "Sin facturas.");
      return;
    }
    for (const invoice of invoices) {
      const row = el("tr");
      row.dataset.invoiceId = invoice.id;
      const id = el("td", "invoice-id", invoice.id);
      if (invoice.service) id.title = invoice.service;
      row.appendChild(id);
      row.appendChild(el("td", "amount", money(invoice.total)));
      row.appendChild(el("td", `invoice-status invoice-${invoice.status}`,
        INVOICE_STATUS_LABELS[invoice.status] || invoice.status));
      row.appendChild(el("td", "date", invoice.due || "—"));
      const cell = el("td");
      const actions = el("div", "row-actions");
      if (invoice.status === "unpaid") {
        const path = `invoices/${encodeURIComponent(invoice.id)}`;
        actions.appendChild(actionButton("Pagar", `Pagar factura ${invoice.id}`,
          (button) => billingAction(`${path}/pay`, {}, button), "primary"));
        actions.appendChild(actionButton("Anular", `Anular factura ${invoice.id}`,
          (button) => billingAction(`${path}/cancel`, {}, button), "danger"));
      }
      cell.appendChild(actions);
      row.appendChild(cell);
      els.invoices.appendChild(row);
    }
  }

  function renderDomains(domains) {
    clear(els.domains);
    if (!domains.length) {
      emptyRow(els.domains, 3, "Sin dominios.");
      return;
    }
    for (const domain of domains) {
      const row = el("tr");
      row.dataset.domainId = domain.id;
      row.appendChild(el("td", null, domain.name));
      row.appendChild(el("td", null, domain.auto_renew ? "sí" : "no"));
      const cell = el("td");
      const actions = el("div", "row-actions");
      actions.appendChild(actionButton("Borrar", `Borrar dominio ${domain.name}`,
        (button) => billingAction(`domains/${encodeURIComponent(domain.id)}/delete`, {}, button), "danger"));
      cell.appendChild(actions);
      row.appendChild(cell);
      els.domains.appendChild(row);
    }
  }

  function renderEvents(events) {
    clear(els.events);
    const seen = state.billing.seenEvents;
    const now = new Set();
    if (!events.length) {
      els.events.appendChild(el("li", "muted", "Todavía no hay eventos para este cliente."));
    }
    for (const event of events) {
      now.add(event.id);
      // Highlighted when it appeared while the panel was open.
      const item = el("li", seen && !seen.has(event.id) ? "event new" : "event");
      item.dataset.eventType = event.type;
      const head = el("div", "event-head");
      head.appendChild(el("code", "event-type", event.type));
      const at = new Date(event.occurred_at);
      const time = el("time", "event-time", at.toLocaleString("es-AR", {
        day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
      }));
      time.dateTime = event.occurred_at;
      head.appendChild(time);
      item.appendChild(head);
      if (EVENT_NAMES[event.type]) item.appendChild(el("div", "event-name", EVENT_NAMES[event.type]));
      const summary = eventSummary(event.data || {});
      if (summary) item.appendChild(el("div", "event-data", summary));
      if (event.alert) item.appendChild(el("div", "event-alert", alertSummary(event.alert)));
      els.events.appendChild(item);
    }
    state.billing.seenEvents = seen ? new Set([...seen, ...now]) : now;
  }

  // What became of the event's alert (store/alerts.py states).
  const ALERT_STATES = {
    pending: "por procesar",
    queued: "en cola",
    sent: "enviada",
    delivered: "entregada",
    read: "leída",
    failed: "falló",
    skipped: "no se envía",
  };

  function alertSummary(alert) {
    let text = `Alerta: ${ALERT_STATES[alert.state] || alert.state}`;
    if (alert.sent_as) text += alert.sent_as === "template" ? " (plantilla)" : " (texto)";
    if (alert.detail) text += ` · ${alert.detail}`;
    return text;
  }

  function renderFireButtons() {
    const box = $("fire-events");
    if (!box || box.childElementCount) return;
    for (const [type, name] of Object.entries(EVENT_NAMES)) {
      const button = el("button", "panel-button", name);
      button.type = "button";
      button.dataset.eventType = type;
      button.addEventListener("click", () => billingAction("events", { type }, button));
      box.appendChild(button);
    }
  }

  function eventSummary(data) {
    const parts = [];
    if (data.invoice_id) parts.push(`factura ${data.invoice_id}`);
    if (data.quote_id) parts.push(`presupuesto ${data.quote_id}`);
    if (data.service) parts.push(`servicio ${data.service}`);
    else if (data.service_id && !data.invoice_id) parts.push(`servicio ${data.service_id}`);
    if (data.domain) parts.push(`dominio ${data.domain}`);
    if (data.subject) parts.push(`«${data.subject}»`);
    if (data.total) parts.push(money(data.total));
    if (data.due_date) parts.push(`vence ${data.due_date}`);
    if (data.valid_until) parts.push(`válido hasta ${data.valid_until}`);
    if (parts.length) return parts.join(" · ");
    // An event type this panel does not know: its fields as they came.
    return Object.entries(data)
      .filter(([, value]) => value !== null && typeof value !== "object")
      .map(([key, value]) => `${key}: ${value}`)
      .join(" · ");
  }

  async function createQuote(event) {
    event.preventDefault();
    const button = els.quoteForm.querySelector("button[type=submit]");
    els.quoteDone.textContent = "";
    const data = await billingAction("quotes", {
      total: els.quoteTotal.value,
      subject: els.quoteSubject.value,
    }, button);
    if (data && data.done && data.done.quote) {
      const quote = data.done.quote;
      els.quoteDone.textContent = `Presupuesto ${quote.id} creado por ${money(quote.total)}.`;
      els.quoteForm.reset();
    }
  }

  // --- wiring ---------------------------------------------------------------------

  els.form.addEventListener("submit", (event) => {
    event.preventDefault();
    sendTyped();
  });
  els.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendTyped();
    }
  });
  els.message.addEventListener("input", autosize);
  els.quoteForm.addEventListener("submit", createQuote);
  els.sticker.addEventListener("click", () => send({ type: "sticker" }));
  els.location.addEventListener("click", () => send({ type: "location" }));
  for (const closer of els.sheet.querySelectorAll("[data-close-sheet]")) {
    closer.addEventListener("click", closeSheet);
  }
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !els.sheet.hidden) closeSheet();
  });

  loadCustomers();
})();
