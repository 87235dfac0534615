import { test, expect, Locator, Page } from "@playwright/test";
import { createThread, hydrated, uniqueQuestion } from "./helpers";

// The shipped @helper bot's search_threads tool needs approval; the app
// under test lets anyone in the thread decide (STREAMCHAT_TOOL_APPROVER=anyone
// in scripts/test), so a second person can approve.

/** The card of a reply's tool call, by its tool's name. */
function toolCard(reply: Locator, tool: string): Locator {
  return reply.getByRole("group", { name: `Tool call ${tool}` });
}

/** The @helper bot's reply. */
function helperReply(page: Page): Locator {
  return page
    .locator("article.message.assistant")
    .filter({ has: page.locator(".author", { hasText: /^helper$/ }) });
}

async function askHelper(page: Page, author: string, text: string): Promise<void> {
  await page.getByRole("textbox", { name: "Name" }).fill(author);
  await page.getByRole("textbox", { name: "Message" }).fill(`@helper ${text}`);
  await page.getByRole("textbox", { name: "Message" }).press("Enter");
}

test("one asks, another approves: the card waits with its arguments, then the result and the answer stream", async ({ browser }) => {
  const asker = await browser.newPage();
  const approver = await browser.newPage();
  const path = await createThread(asker, uniqueQuestion("Tools"));
  await approver.goto(path);
  await hydrated(approver);
  const term = uniqueQuestion("needle").replace(/ /g, "");
  await askHelper(asker, "Asker", `search for ${term}`);

  const card = toolCard(helperReply(asker), "search_threads");
  await expect(card).toHaveAttribute("data-state", "waiting");
  await expect(card.locator(".tool-arguments")).toContainText(term);

  // A reload mid-wait: still waiting, with the same arguments.
  await asker.reload();
  await hydrated(asker);
  await expect(card).toHaveAttribute("data-state", "waiting");
  await expect(card.locator(".tool-arguments")).toContainText(term);

  // The other person sees the same card and approves it.
  const theirs = toolCard(helperReply(approver), "search_threads");
  await expect(theirs).toHaveAttribute("data-state", "waiting");
  await expect(theirs.locator(".tool-arguments")).toContainText(term);
  await approver.getByRole("textbox", { name: "Name" }).fill("Approver");
  await theirs.getByRole("button", { name: "Approve" }).click();

  // The asker sees it run, by whom, and the answer stream in.
  await expect(card).toHaveAttribute("data-state", "done");
  await expect(card).toContainText("approved by Approver");
  const reply = helperReply(asker);
  await expect(reply).toHaveAttribute("data-status", "done", { timeout: 60_000 });
  await expect(reply.locator(":scope > .body")).toContainText("The result was");
  await card.getByText("Result").click();
  await expect(card.locator(".tool-output")).toContainText("hits");
});

test("a denied call does not run, and the bot still answers", async ({ browser }) => {
  const asker = await browser.newPage();
  const other = await browser.newPage();
  const path = await createThread(asker, uniqueQuestion("Tools denied"));
  await other.goto(path);
  await hydrated(other);
  await askHelper(asker, "Asker", `search for ${uniqueQuestion("secret").replace(/ /g, "")}`);
  const theirs = toolCard(helperReply(other), "search_threads");
  await expect(theirs).toHaveAttribute("data-state", "waiting");
  await other.getByRole("textbox", { name: "Name" }).fill("Denier");
  await theirs.getByRole("button", { name: "Deny" }).click();
  const card = toolCard(helperReply(asker), "search_threads");
  await expect(card).toHaveAttribute("data-state", "denied");
  await expect(card).toContainText("denied by Denier");
  await expect(helperReply(asker)).toHaveAttribute("data-status", "done", { timeout: 60_000 });
});

test("approving a call with other arguments than those shown is refused", async ({ page, request }) => {
  const path = await createThread(page, uniqueQuestion("Tools mismatch"));
  await askHelper(page, "Asker", `search for ${uniqueQuestion("exact").replace(/ /g, "")}`);
  const reply = helperReply(page);
  const card = toolCard(reply, "search_threads");
  await expect(card).toHaveAttribute("data-state", "waiting");
  const id = await reply.getAttribute("data-id");
  const thread = path.replace("/t/", "");
  const response = await request.post("/api/decide_tool_call", {
    form: { thread, id: id!, call: "0", arguments_hash: "0000000000000000", decision: "approve", by: "Asker" },
    headers: { accept: "application/json" },
  });
  expect(response.status()).toBe(409);
  expect(await response.text()).toContain("not the ones you were shown");
  // Nothing changed: it still waits.
  await expect(card).toHaveAttribute("data-state", "waiting");
  await card.getByRole("button", { name: "Deny" }).click();
  await expect(card).toHaveAttribute("data-state", "denied");
});

test.describe("without JavaScript", () => {
  test.use({ javaScriptEnabled: false });

  test("a waiting call is approved with the plain form", async ({ page }) => {
    await page.goto("/t/lobby");
    const term = uniqueQuestion("plainform").replace(/ /g, "");
    await page.getByRole("textbox", { name: "Name" }).fill("NoScript");
    await page.getByRole("textbox", { name: "Message" }).fill(`@helper search for ${term}`);
    await page.getByRole("button", { name: "Send" }).click();
    await page.waitForURL((url) => url.pathname === "/t/lobby");
    const reply = page
      .locator("article.message.assistant")
      .filter({ has: page.locator(".tool-arguments", { hasText: term }) });
    // The page is not live: reload until the call waits.
    await expect(async () => {
      await page.reload();
      await expect(toolCard(reply, "search_threads")).toHaveAttribute("data-state", "waiting", { timeout: 1000 });
    }).toPass({ timeout: 30_000 });
    await reply.getByRole("button", { name: "Approve" }).click();
    await page.waitForURL((url) => url.pathname === "/t/lobby");
    await expect(async () => {
      await page.reload();
      await expect(reply).toHaveAttribute("data-status", "done", { timeout: 1000 });
    }).toPass({ timeout: 60_000 });
    await expect(toolCard(reply, "search_threads")).toHaveAttribute("data-state", "done");
    await expect(toolCard(reply, "search_threads")).toContainText("approved by NoScript");
  });
});
