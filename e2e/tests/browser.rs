//! The web console in a real browser: headless Chromium driven through
//! chromedriver (WebDriver) with fantoccini, against a real `whet serve` that
//! serves the console bundle.
//!
//! Needs the bundle in `target/console` (`cargo run -p xtask -- build-console`;
//! scripts/test.sh builds it), the `whet` binary, and Debian's `chromium` and
//! `chromium-driver`. Every step saves a screenshot to `target/e2e/`.
//!
//! The tests past the MiniLM deploy use the small example model
//! (`whet example-model`), deployed with the CLI into a team the test
//! creates through the API, so each one sets up in seconds.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tempfile::TempDir;
use whetstone_e2e::{minilm_folder, zoo, Server};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const INSTALL_HINT: &str = "apt-get install -y chromium chromium-driver";

/// The flags STACK.md found to work on these machines: no sandbox or GPU in
/// a container, a small /dev/shm, nothing fetched in the background.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Tall enough for the log and the report in one screenshot.
    "--window-size=1280,1600",
];

/// How often page state is polled while waiting.
const POLL: Duration = Duration::from_millis(100);
/// Waits for something the page does by itself (render, navigate, reload).
/// Generous: the debug bundle is 24 MB of wasm to compile on a busy machine.
const PAGE: Duration = Duration::from_secs(30);
/// The whole MiniLM deploy, optimizer included, on a busy 2-core machine.
const DEPLOY: Duration = Duration::from_secs(900);

/// One browser test at a time: on two cores a second Chromium and server
/// slow every wait down and skew the log latency figure.
/// An async lock: it is held across the test's awaits, and a failed test
/// (a panic) leaves it usable for the others.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// The cargo target folder this test was built into
/// (`<target>/<profile>/deps/<test>`), so a `CARGO_TARGET_DIR` is honoured
/// the way `whet_bin()` honours it.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .nth(3)
        .expect("target folder above the test executable")
        .to_path_buf()
}

/// The console bundle `whet serve --console` serves; this test builds nothing.
fn console_bundle() -> PathBuf {
    let dir = target_dir().join("console");
    assert!(
        dir.join("index.html").is_file(),
        "the console bundle is missing: expected {}/index.html. Build it with \
         `cargo run --locked -p xtask -- build-console` (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// A server with the console, on a fresh data folder inside `work`.
fn start_server(work: &TempDir) -> Server {
    let console = console_bundle();
    Server::start(
        &work.path().join("data"),
        &["--console", console.to_str().expect("UTF-8 path")],
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// chromedriver on a free loopback port; killed on drop.
struct Chromedriver {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Chromedriver {
    fn start(dir: &Path) -> Chromedriver {
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}; {INSTALL_HINT}"));
        let mut driver = Chromedriver {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        // It listens once it is ready for sessions.
        let started = Instant::now();
        while TcpStream::connect(&driver.addr).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited at start ({status}):\n{}",
                    driver.log_text()
                );
            }
            assert!(
                started.elapsed() < PAGE,
                "chromedriver did not listen on {} within {PAGE:?}:\n{}",
                driver.addr,
                driver.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        driver
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ends a session without the async client, which may already be gone
    /// (a failed test unwinding): chromedriver then quits Chromium itself,
    /// which killing chromedriver alone would leave running.
    fn delete_session(&self, id: &str) {
        let Ok(mut s) = TcpStream::connect(&self.addr) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE /session/{id} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            self.addr
        );
        if s.write_all(request.as_bytes()).is_ok() {
            // chromedriver answers once Chromium has quit, and may keep the
            // connection open after that: the first bytes are enough.
            let _ = s.read(&mut [0u8; 1024]);
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session. Field order is drop order: the driver goes
/// before the profile folder it uses.
struct Browser {
    client: Client,
    /// Open session, ended by `close` or, when the test failed, by Drop.
    session: Option<String>,
    test: &'static str,
    driver: Chromedriver,
    /// Where the browser saves downloads (in the profile folder).
    downloads: PathBuf,
    _profile: TempDir,
}

impl Browser {
    /// `test` names the screenshots: `target/e2e/<test>-<step>.png`.
    async fn start(test: &'static str) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).is_file(),
                "{bin} is missing: the browser tests need Debian's Chromium and its driver: {INSTALL_HINT}"
            );
        }
        let profile = tempfile::tempdir().expect("profile folder");
        let driver = Chromedriver::start(profile.path());
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        // A fresh profile: no state from another run or test.
        args.push(format!(
            "--user-data-dir={}",
            profile.path().join("chromium").display()
        ));
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads folder");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": args,
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{}", driver.addr))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver could not start Chromium: {e}\n{}",
                    driver.log_text()
                )
            });
        let session = client.session_id().await.ok().flatten();
        Browser {
            client,
            session,
            test,
            driver,
            downloads,
            _profile: profile,
        }
    }

    /// The bytes of the file the browser downloaded as `name`, once it is
    /// complete.
    async fn downloaded(&self, name: &str) -> Vec<u8> {
        let path = self.downloads.join(name);
        let partial = self.downloads.join(format!("{name}.crdownload"));
        let started = Instant::now();
        loop {
            if path.is_file() && !partial.exists() {
                return std::fs::read(&path).expect("the download");
            }
            let seen: Vec<_> = std::fs::read_dir(&self.downloads)
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(
                started.elapsed() < PAGE,
                "no download {name} within {PAGE:?} (the folder holds {seen:?})"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    async fn close(mut self) {
        if self.session.take().is_some() {
            let _ = self.client.clone().close().await;
        }
    }

    async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Saves the viewport as `target/e2e/<test>-<step>.png`.
    async fn screenshot(&self, step: &str) -> PathBuf {
        let dir = target_dir().join("e2e");
        std::fs::create_dir_all(&dir).expect("create target/e2e");
        let path = dir.join(format!("{}-{step}.png", self.test));
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot {}", path.display());
        path
    }

    /// Runs `body` as a function in the page and returns its result.
    async fn js(&self, body: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(body, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{body}"))
    }

    /// Runs `body` every POLL until it returns something other than
    /// null/undefined/false, and returns that. Script errors count as "not
    /// yet" (the page may be between documents). After `timeout` the test
    /// fails with a screenshot and the page's text.
    async fn wait_js(&self, what: &str, timeout: Duration, body: &str) -> Value {
        let started = Instant::now();
        let mut last_error = None;
        loop {
            match self.client.execute(body, vec![]).await {
                Ok(Value::Null | Value::Bool(false)) => {}
                Ok(v) => return v,
                Err(e) => last_error = Some(e.to_string()),
            }
            if started.elapsed() > timeout {
                self.fail(&format!(
                    "timed out after {timeout:?} waiting for {what} (last script error: {last_error:?})"
                ))
                .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_for(&self, what: &str, css: &str) -> Element {
        let body = format!("return document.querySelector({}) !== null", json!(css));
        self.wait_js(what, PAGE, &body).await;
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find {css}: {e}"))
    }

    /// Clicks the element `css` selects, finding it afresh on each try: the
    /// console re-renders lists it polls, so an element found a moment ago
    /// may have been replaced (a stale reference) by the time it is clicked.
    async fn click(&self, what: &str, css: &str) {
        let started = Instant::now();
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(el) => el.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(e) if started.elapsed() > PAGE => {
                    self.fail(&format!("cannot click {what} ({css}): {e}"))
                        .await
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    /// Fails the test with what the page showed.
    async fn fail(&self, why: &str) -> ! {
        let shot = match self.client.screenshot().await {
            Ok(png) => {
                let dir = target_dir().join("e2e");
                let path = dir.join(format!("{}-failed.png", self.test));
                let saved = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, png));
                saved.map_or_else(|e| e.to_string(), |_| path.display().to_string())
            }
            Err(e) => e.to_string(),
        };
        let text = self
            .client
            .execute("return document.body.innerText", vec![])
            .await
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        panic!("{why}\nscreenshot: {shot}\npage text:\n{text}");
    }

    /// Signs in with the admin token and waits for the services page.
    async fn sign_in(&self, server: &Server) {
        self.goto(&server.url()).await;
        self.wait_for("the sign-in form", "form[data-test=signin]")
            .await;
        self.submit_token(&server.admin_token()).await;
        self.wait_for("the services page", "[data-test=services-page]")
            .await;
    }

    async fn submit_token(&self, token: &str) {
        let input = self
            .wait_for(
                "the token field",
                "form[data-test=signin] input[name=token]",
            )
            .await;
        input.clear().await.expect("clear token field");
        input.send_keys(token).await.expect("type the token");
        self.click("Sign in", "form[data-test=signin] button[type=submit]")
            .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            self.driver.delete_session(&id);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_with_the_admin_token_shows_the_services_page() {
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    let browser = Browser::start("signin").await;

    browser.goto(&server.url()).await;
    browser
        .wait_for("the sign-in form", "form[data-test=signin]")
        .await;
    browser.screenshot("1-form").await;

    // A wrong token is refused with a message, and nothing is kept.
    browser.submit_token("whet_not_a_token").await;
    browser
        .wait_js(
            "the refusal message",
            PAGE,
            "const e = document.querySelector('form[data-test=signin] .error-box'); \
             return e && e.textContent.includes('The server refused this token')",
        )
        .await;

    browser.submit_token(&server.admin_token()).await;
    // The list loads after the page shows: wait for its answer, which on a
    // fresh server is the empty state.
    browser
        .wait_js(
            "the services page with its (empty) list",
            PAGE,
            "return document.querySelector('[data-test=services-page]') !== null \
             && document.querySelector('main').innerText.includes('No services yet')",
        )
        .await;
    browser.screenshot("2-services").await;

    // The token is kept: a reload stays signed in.
    browser.client.refresh().await.expect("reload");
    browser
        .wait_for(
            "the services page after a reload",
            "[data-test=services-page]",
        )
        .await;
    let form = browser
        .js(
            "return document.querySelector('form[data-test=signin]') !== null",
            vec![],
        )
        .await;
    assert_eq!(form, json!(false), "signed out by a reload");

    // The console ran under the server's Content-Security-Policy, which the
    // browser enforces: a script injected into the page (what a stolen
    // token would take) does not run, and the browser reports why.
    let injected = browser
        .js(
            "window.__violations = []; \
             document.addEventListener('securitypolicyviolation', \
                 (e) => window.__violations.push(e.violatedDirective)); \
             const s = document.createElement('script'); \
             s.textContent = 'window.__injected = true'; \
             document.body.appendChild(s); \
             return [window.__injected === true, document.getElementById('boot-error') !== null];",
            vec![],
        )
        .await;
    assert_eq!(
        injected,
        json!([false, false]),
        "[the inline script ran, the console failed to boot]"
    );
    browser
        .wait_js(
            "the browser's report of the refused script",
            PAGE,
            "return window.__violations.some((d) => d.startsWith('script-src'))",
        )
        .await;

    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_service_editor_shows_the_invalid_field_path_until_fixed() {
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    let browser = Browser::start("editor").await;
    browser.sign_in(&server).await;

    // Through the top bar, as a user would: the router, not a page load.
    browser
        .click("the New service link", "header.topbar nav a[href='/new']")
        .await;
    let editor = browser
        .wait_for("the config editor", "textarea[data-test=config-editor]")
        .await;
    // The editor starts from the seed's CPU example: valid by the rules,
    // but its model folder and resource group are placeholders, which the
    // server says before anyone deploys it.
    let seed_check = browser
        .wait_js(
            "the server's problems with the seed example",
            PAGE,
            "const p = document.querySelector('[data-test=server-problems]'); \
             if (!p) return null; \
             return { summary: p.textContent, \
                      paths: [...document.querySelectorAll('[data-test=validation] code.path')].map(c => c.textContent), \
                      deployDisabled: document.querySelector('[data-test=deploy]').disabled };",
        )
        .await;
    let paths = seed_check["paths"].to_string();
    assert!(
        paths.contains("\"resource\"") && paths.contains("\"model_path\""),
        "{seed_check}"
    );
    assert_eq!(seed_check["deployDisabled"], json!(true), "{seed_check}");
    browser.screenshot("0-seed-server-problems").await;

    let mut config: Value =
        serde_json::from_str(include_str!("../../shared/tests/examples/cpu_plugin.json"))
            .expect("the seed's example parses");
    config["name"] = json!("Bad Name");
    editor.clear().await.expect("clear the editor");
    editor
        .send_keys(&config.to_string())
        .await
        .expect("type the config");
    let state = browser
        .wait_js(
            "the error on `name`",
            PAGE,
            "const items = [...document.querySelectorAll('[data-test=validation] li')].map(li => ({ \
                 path: li.querySelector('code.path')?.textContent, text: li.textContent })); \
             if (!items.some(i => i.path === 'name')) return null; \
             return { items, summary: document.querySelector('[data-test=validation] .invalid')?.textContent, \
                      deployDisabled: document.querySelector('[data-test=deploy]').disabled };",
        )
        .await;
    let items = state["items"].as_array().expect("error list");
    assert_eq!(
        items.len(),
        1,
        "only the name is wrong, so one error: {state}"
    );
    let text = items[0]["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("lowercase") && text.contains("Bad Name"),
        "the error says what a name may hold and quotes the bad one: {text}"
    );
    assert_eq!(state["summary"], json!("1 problem"), "{state}");
    assert_eq!(
        state["deployDisabled"],
        json!(true),
        "Deploy must be disabled while the config is invalid"
    );
    browser.screenshot("1-invalid").await;

    config["name"] = json!("good_name");
    editor.clear().await.expect("clear the editor");
    editor
        .send_keys(&config.to_string())
        .await
        .expect("type the fixed config");
    // The name's error clears; the server's problems stay, and Deploy with
    // them.
    browser
        .wait_js(
            "the name's error to clear and the server's problems to show",
            PAGE,
            "return document.querySelector('[data-test=server-problems]') !== null \
             && ![...document.querySelectorAll('[data-test=validation] code.path')].some(c => c.textContent === 'name') \
             && document.querySelector('[data-test=deploy]').disabled || null",
        )
        .await;
    browser.screenshot("2-fixed").await;

    // Another example while the text holds edits: asked first.
    let edited = browser
        .js(
            "return document.querySelector('[data-test=config-editor]').value;",
            vec![],
        )
        .await;
    let pick = "const s = document.querySelector('[data-test=example]'); s.value = '2'; \
                s.dispatchEvent(new Event('change', { bubbles: true })); return true;";
    browser.js(pick, vec![]).await;
    browser
        .wait_for("the replace question", "[data-test=confirm-example]")
        .await;
    browser.screenshot("4-replace-asked").await;
    browser
        .click("Keep my edits", "[data-test=keep-edits]")
        .await;
    let kept = browser
        .js(
            "return document.querySelector('[data-test=config-editor]').value;",
            vec![],
        )
        .await;
    assert_eq!(kept, edited, "keeping the edits changed the text");
    browser.js(pick, vec![]).await;
    browser
        .click("Replace", "[data-test=confirm-example-button]")
        .await;
    let replaced = browser
        .wait_js(
            "the example in the editor",
            PAGE,
            "const v = document.querySelector('[data-test=config-editor]').value; \
             return v.includes('\"processor\"') && !v.includes('good_name') ? v : null;",
        )
        .await;
    let replaced: Value = serde_json::from_str(replaced.as_str().unwrap_or("{}")).expect("JSON");
    let seed: Value =
        serde_json::from_str(include_str!("../../shared/tests/examples/no_plugin.json"))
            .expect("the seed's example parses");
    assert_eq!(replaced, seed);

    // The ready-to-deploy example: the server uploads its small model, and
    // the config deploys as it is.
    browser
        .js(
            "const s = document.querySelector('[data-test=example]'); s.value = '3'; \
             s.dispatchEvent(new Event('change', { bubbles: true })); return true;",
            vec![],
        )
        .await;
    browser
        .wait_js(
            "the example model's config",
            PAGE,
            "const v = document.querySelector('[data-test=config-editor]').value; \
             return v.includes('upload://') && v.includes('example_mlp') \
                 && document.querySelector('[data-test=validation]').textContent.includes('Valid config') \
                 && !document.querySelector('[data-test=deploy]').disabled || null;",
        )
        .await;
    browser.screenshot("5-ready-example").await;
    browser.click("Deploy", "[data-test=deploy]").await;
    browser
        .wait_js(
            "the example deployed and Running",
            Duration::from_secs(120),
            "return document.querySelector('[data-test=service-name]')?.textContent === 'example_mlp' \
                 && document.querySelector('[data-test=service-overview] .status')?.textContent === 'Running' \
                 || null;",
        )
        .await;
    browser.screenshot("6-example-running").await;

    // What only a deploy can find (a service of that name exists now) is
    // the server's answer, shown until the config changes.
    browser
        .click("the New service link", "header.topbar nav a[href='/new']")
        .await;
    browser
        .js(
            "const s = document.querySelector('[data-test=example]'); s.value = '3'; \
             s.dispatchEvent(new Event('change', { bubbles: true })); return true;",
            vec![],
        )
        .await;
    browser
        .wait_js(
            "the example again, deployable as far as can be told",
            PAGE,
            "return document.querySelector('[data-test=validation]').textContent.includes('deployable') \
                 && !document.querySelector('[data-test=deploy]').disabled || null;",
        )
        .await;
    browser.click("Deploy", "[data-test=deploy]").await;
    let refused = browser
        .wait_js(
            "the server's answer",
            PAGE,
            "return document.querySelector('.error-box')?.textContent || null",
        )
        .await;
    browser.screenshot("3-refused").await;
    let editor = browser
        .wait_for("the config editor", "textarea[data-test=config-editor]")
        .await;
    editor.send_keys(" ").await.expect("type a space");
    browser
        .wait_js(
            "the answer to go with the change",
            PAGE,
            "return document.querySelector('.error-box') === null",
        )
        .await;
    assert!(
        refused.as_str().unwrap_or_default().contains("example_mlp"),
        "{refused}"
    );

    browser.close().await;
}

/// Records, in the page, when each log row enters the DOM (browser clock, ms
/// since the epoch, like the server's timestamps on this same machine).
/// Returns the time it started watching.
const WATCH_ARRIVALS_JS: &str = "
    window.__arrivals = {};
    const note = () => {
        const now = Date.now();
        for (const r of document.querySelectorAll('[data-test=deploy-log] [data-id]'))
            if (!(r.dataset.id in window.__arrivals)) window.__arrivals[r.dataset.id] = now;
    };
    note();
    new MutationObserver(note).observe(document.body, { childList: true, subtree: true });
    return Date.now();";

/// Defines `rows()`: the log rows as {id, ts, line, ok}, in page order.
const ROWS_JS: &str = "
    const rows = () => [...document.querySelectorAll('[data-test=deploy-log] [data-id]')].map(r => ({
        id: Number(r.dataset.id),
        ts: r.dataset.ts,
        line: r.textContent.slice(r.querySelector('.ts').textContent.length).trim(),
        ok: r.classList.contains('log-ok'),
    }));";

/// The deploy log in the page, as (id, line).
async fn page_log(browser: &Browser) -> Vec<(i64, String)> {
    let rows = browser
        .js(&format!("{ROWS_JS} return rows();"), vec![])
        .await;
    rows.as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().expect("row id"),
                r["line"].as_str().expect("row text").to_string(),
            )
        })
        .collect()
}

/// The whole stored log from the API, as (id, line).
fn api_log(server: &Server, name: &str) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = server.admin(
            "GET",
            &format!("/api/v2/services/{name}/logs?after={after}&limit=1000"),
            b"",
        );
        assert_eq!(status, 200, "{page}");
        for l in page["lines"].as_array().expect("lines") {
            out.push((
                l["id"].as_i64().expect("id"),
                l["line"].as_str().expect("line").to_string(),
            ));
        }
        match page["next"].as_i64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

/// One observation of the log while the deploy runs.
struct Sample {
    at: Duration,
    ok_lines: u64,
    last: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_log_streams_live_replays_on_reload_and_the_report_and_deep_link_work() {
    const NAME: &str = "minilm_live";
    let _serial = one_at_a_time().await;
    let zoo = zoo();
    let work = tempfile::tempdir().unwrap();
    minilm_folder(&zoo, &work.path().join("minilm"));
    let config = work.path().join("service.json");
    std::fs::write(&config, whetstone_e2e::minilm_config(NAME, "minilm")).unwrap();
    let server = start_server(&work);
    let browser = Browser::start("deploy").await;
    browser.sign_in(&server).await;

    // 3. The deploy, started by the CLI in the background; the page opens as
    // soon as the service exists (after the model upload), while the worker
    // is still early in the deploy.
    let create = server
        .cli(&["create", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start whet create");
    let create = std::thread::spawn(move || create.wait_with_output().expect("whet create"));
    let detail_path = format!("/api/v2/services/{NAME}");
    let upload_started = Instant::now();
    while server.admin("GET", &detail_path, b"").0 != 200 {
        if create.is_finished() {
            // Only a failure ends the CLI this early.
            let out = create.join().expect("whet create thread");
            panic!(
                "whet create ended before the service appeared: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            upload_started.elapsed() < Duration::from_secs(180),
            "the service did not appear within 180 s of `whet create`"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let opened = Instant::now();
    browser
        .goto(&format!("{}/services/{NAME}", server.url()))
        .await;
    let watching_since = browser
        .js(WATCH_ARRIVALS_JS, vec![])
        .await
        .as_f64()
        .expect("browser clock");

    // Poll the page; keep a sample whenever the count of [OK] rows changes.
    let probe = format!(
        "{ROWS_JS} const r = rows(); return {{ ok: r.filter(x => x.ok).length, \
         running: r.some(x => x.line.startsWith('[OK] Service is running')), \
         error: r.map(x => x.line).find(l => l.includes('[ERROR]')) ?? null, \
         last: r.length ? r[r.length - 1].line : '' }};"
    );
    let mut samples: Vec<Sample> = Vec::new();
    let mut live_shot = false;
    loop {
        let s = browser.js(&probe, vec![]).await;
        if let Some(e) = s["error"].as_str() {
            browser.fail(&format!("the deploy failed: {e}")).await;
        }
        let ok_lines = s["ok"].as_u64().unwrap_or(0);
        if samples.last().is_none_or(|p| p.ok_lines != ok_lines) {
            samples.push(Sample {
                at: opened.elapsed(),
                ok_lines,
                last: s["last"].as_str().unwrap_or_default().to_string(),
            });
            // The first growth seen in the page: mid-deploy.
            if samples.len() == 2 && !live_shot && s["running"] != json!(true) {
                browser.screenshot("1-live").await;
                live_shot = true;
            }
        }
        if s["running"] == json!(true) {
            break;
        }
        if opened.elapsed() > DEPLOY {
            browser
                .fail(&format!("no `Service is running` within {DEPLOY:?}"))
                .await;
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!("[OK] rows in the page while the deploy ran (time since the page opened):");
    for s in &samples {
        eprintln!(
            "  {:>7.2} s  {:>2} [OK] rows  last: {}",
            s.at.as_secs_f64(),
            s.ok_lines,
            s.last
        );
    }
    let counts: Vec<u64> = samples.iter().map(|s| s.ok_lines).collect();
    assert!(
        counts.windows(2).all(|w| w[0] < w[1]),
        "the log only grows: {counts:?}"
    );
    assert!(
        counts.len() >= 3,
        "the [OK] rows should arrive over time, not all at once; counts seen: {counts:?}"
    );
    let lines: Vec<String> = page_log(&browser)
        .await
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    whetstone_e2e::assert_in_order(&lines, whetstone_e2e::SEED_LINES_IN_ORDER);

    // The stream's end reloads the overview: Running, with its speedup.
    browser
        .wait_js(
            "the deploy's end in the page",
            PAGE,
            "return document.querySelector('[data-test=log-state]').textContent \
                 .startsWith('Deploy finished; the service is Running') \
             && document.querySelector('[data-test=service-overview] .status')?.textContent === 'Running'",
        )
        .await;
    browser.screenshot("2-done").await;

    // Latency of each line that arrived while the page watched: server
    // timestamp (stored, then broadcast) to the row entering the DOM.
    let timing = browser
        .js(
            &format!(
                "{ROWS_JS} return rows().map(r => ({{ line: r.line, server: Date.parse(r.ts), \
                 seen: window.__arrivals[r.id] ?? null }}));"
            ),
            vec![],
        )
        .await;
    let mut latencies = Vec::new();
    eprintln!("log line latency, server timestamp -> row in the DOM (lines written after the page opened; \
         the first ones may include the page's own start-up, before its stream was open):");
    for t in timing.as_array().expect("timing rows") {
        let (Some(server_ms), Some(seen_ms)) = (t["server"].as_f64(), t["seen"].as_f64()) else {
            continue;
        };
        if server_ms < watching_since {
            continue; // replayed history, not a live line
        }
        let ms = seen_ms - server_ms;
        latencies.push(ms);
        let line = t["line"].as_str().unwrap_or_default();
        eprintln!(
            "  {ms:>6.0} ms  {}",
            line.chars().take(90).collect::<String>()
        );
    }
    if latencies.is_empty() {
        eprintln!("  (no line was written after the page opened)");
    } else {
        latencies.sort_by(f64::total_cmp);
        eprintln!(
            "  {} lines: min {:.0} ms, median {:.0} ms, max {:.0} ms",
            latencies.len(),
            latencies[0],
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1]
        );
    }

    let out = create.join().expect("whet create thread");
    assert!(
        out.status.success(),
        "whet create failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // 4. A reload replays the whole stored log, in order.
    let stored = api_log(&server, NAME);
    browser.client.refresh().await.expect("reload");
    browser
        .wait_js(
            "the replayed log",
            PAGE,
            &format!(
                "return document.querySelectorAll('[data-test=deploy-log] [data-id]').length === {} \
                 && document.querySelector('[data-test=log-state]').textContent.startsWith('Deploy finished')",
                stored.len()
            ),
        )
        .await;
    assert_eq!(
        page_log(&browser).await,
        stored,
        "the page after a reload shows the stored log"
    );
    browser.screenshot("3-reloaded").await;

    // 5. The report: one table row per candidate, one bar per timed
    // candidate and shape group, as the API reports them.
    let (status, detail) = server.admin("GET", &detail_path, b"");
    assert_eq!(status, 200, "{detail}");
    let candidates = detail["report"]["candidates"]
        .as_array()
        .expect("a deployed service has a report");
    let timed: usize = candidates
        .iter()
        .map(|c| {
            let mut shapes: Vec<&str> = c["latency"]
                .as_array()
                .map(|l| l.iter().filter_map(|x| x["shapes"].as_str()).collect())
                .unwrap_or_default();
            shapes.sort_unstable();
            shapes.dedup();
            shapes.len()
        })
        .sum();
    let report = browser
        .wait_js(
            "the report table and chart",
            PAGE,
            "const s = document.querySelector('[data-test=report]'); \
             if (!s || !s.querySelector('table.report') || !s.querySelector('figure.chart svg')) return null; \
             s.scrollIntoView(); \
             return { rows: s.querySelectorAll('table.report tbody tr').length, \
                      selected: s.querySelectorAll('table.report tr.cand-selected').length, \
                      bars: s.querySelectorAll('figure.chart svg g.bar rect').length, \
                      selectedBars: s.querySelectorAll('figure.chart svg g.bar-selected rect').length, \
                      summary: s.querySelector('.report-summary').textContent };",
        )
        .await;
    assert_eq!(report["rows"], json!(candidates.len()), "{report}");
    assert_eq!(
        report["selected"],
        json!(1),
        "one selected candidate: {report}"
    );
    assert_eq!(report["bars"], json!(timed), "{report}");
    assert!(
        report["selectedBars"].as_u64().unwrap_or(0) >= 1,
        "the selected candidate is drawn: {report}"
    );
    let selected = detail["report"]["selected"].as_str().unwrap_or_default();
    assert!(
        report["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("Selected {selected} ")),
        "{report}"
    );
    browser.screenshot("4-report").await;

    // 6. Deep links: the server answers the console for the path, and a
    // reload there (not a route change inside the app) shows the service.
    let (status, html) = server.http("GET", &format!("/services/{NAME}"), None, b"");
    assert_eq!(status, 200, "deep link answered {status}: {html}");
    assert!(html.contains("<script"), "the console's index.html: {html}");
    browser.goto(&server.url()).await;
    let link = format!("table.services a[href='/services/{NAME}']");
    browser.wait_for("the service in the list", &link).await;
    browser.click("the service's link", &link).await;
    browser
        .wait_for("the service page", "[data-test=service-overview]")
        .await;
    let url = browser.client.current_url().await.expect("url");
    assert_eq!(url.path(), format!("/services/{NAME}"));
    browser
        .client
        .refresh()
        .await
        .expect("reload the deep link");
    let shown = browser
        .wait_js(
            "the service page after reloading its deep link",
            PAGE,
            "const o = document.querySelector('[data-test=service-overview] .status'); \
             return o && { name: document.querySelector('[data-test=service-name]').textContent, \
                           status: o.textContent, text: document.querySelector('main').innerText };",
        )
        .await;
    assert_eq!(shown["name"], json!(NAME), "{shown}");
    assert_eq!(shown["status"], json!("Running"), "{shown}");
    assert!(
        !shown["text"]
            .as_str()
            .unwrap_or_default()
            .contains("No such page"),
        "{shown}"
    );
    browser.screenshot("5-deep-link").await;

    // A deep link to a service that does not exist says so, not a blank page.
    browser
        .goto(&format!("{}/services/no_such_service", server.url()))
        .await;
    browser
        .wait_js(
            "the not-found message",
            PAGE,
            "const e = document.querySelector('main .error-box'); return e && e.textContent.length > 0",
        )
        .await;
    browser.screenshot("6-not-found").await;

    browser.close().await;
}

// ---------------------------------------------------------------------------
// The example model, teams, users and roles.

/// A management call with `token`, JSON in and out.
fn api_as(server: &Server, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let (status, text) = server.http(method, path, Some(&format!("Bearer {token}")), &body);
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `GET path` as the site admin, again until `done` holds of the answer
/// (at most a minute); the last answer.
async fn poll_api(server: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let answer = admin_ok(server, "GET", path, Value::Null);
        if done(&answer) || started.elapsed() > Duration::from_secs(60) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A management call as the site admin; panics unless it answers 2xx.
fn admin_ok(server: &Server, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = api_as(server, &server.admin_token(), method, path, body);
    assert!(
        (200..300).contains(&status),
        "{method} {path} answered {status}: {answer}"
    );
    answer
}

/// Creates `team` and deploys the example model into it as `name`, with the
/// CLI (which waits for the deploy to end). Returns the example's folder.
fn deploy_example(server: &Server, work: &TempDir, name: &str, team: &str) -> PathBuf {
    admin_ok(server, "POST", "/api/v2/teams", json!({ "name": team }));
    let dir = work.path().join(name);
    let out = server
        .cli(&["example-model", dir.to_str().expect("UTF-8 path")])
        .output()
        .expect("whet example-model");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.join("service.json");
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(&config).expect("service.json")).expect("JSON");
    cfg["name"] = json!(name);
    std::fs::write(&config, cfg.to_string()).expect("write service.json");
    let out = server
        .cli(&[
            "create",
            config.to_str().expect("UTF-8 path"),
            "--team",
            team,
        ])
        .output()
        .expect("whet create");
    assert!(
        out.status.success(),
        "whet create failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let detail = admin_ok(
        server,
        "GET",
        &format!("/api/v2/services/{name}"),
        Value::Null,
    );
    assert_eq!(detail["status"], json!("Running"), "{detail}");
    dir
}

/// A user with `role` in `team` and an API token of theirs, made by the site
/// admin through the API, as an operator would.
fn user_with_role(server: &Server, user: &str, team: &str, role: &str) -> String {
    admin_ok(server, "POST", "/api/v2/users", json!({ "name": user }));
    admin_ok(
        server,
        "PUT",
        &format!("/api/v2/teams/{team}/members/{user}"),
        json!({ "role": role }),
    );
    let token = admin_ok(
        server,
        "POST",
        &format!("/api/v2/users/{user}/tokens"),
        json!({ "name": "browser test" }),
    );
    token["token"].as_str().expect("the new token").to_string()
}

impl Browser {
    /// Signs in with `token` and waits until the console knows who that is
    /// (the top bar names the user): role-gated parts are decided by then.
    async fn sign_in_as(&self, server: &Server, token: &str, user: &str) {
        self.goto(&server.url()).await;
        self.wait_for("the sign-in form", "form[data-test=signin]")
            .await;
        self.submit_token(token).await;
        self.wait_for("the services page", "[data-test=services-page]")
            .await;
        self.wait_js(
            "the signed-in user in the top bar",
            PAGE,
            &format!(
                "return document.querySelector('header [data-test=user]')?.textContent === {}",
                json!(user)
            ),
        )
        .await;
    }

    /// Clears `css`'s field and types `text` into it.
    async fn type_into(&self, what: &str, css: &str, text: &str) {
        let field = self.wait_for(what, css).await;
        field.clear().await.expect("clear the field");
        field.send_keys(text).await.expect("type into the field");
    }

    /// Creates an API token labelled `name` with the token form of the page
    /// shown (account or admin) and returns the secret, shown once, once its
    /// row is listed too.
    async fn create_token(&self, name: &str) -> String {
        self.type_into(
            "the token's name",
            "[data-test=token-create] input[name=name]",
            name,
        )
        .await;
        self.click(
            "Create token",
            "[data-test=token-create] button[type=submit]",
        )
        .await;
        let secret = self
            .wait_js(
                "the new token, shown once",
                PAGE,
                &format!(
                    "const s = document.querySelector('[data-test=shown-once] [data-test=secret]'); \
                     if (!s || !document.querySelector('[data-test=token-row][data-name=' + {} + ']')) return null; \
                     s.scrollIntoView(); return s.textContent;",
                    json!(name)
                ),
            )
            .await;
        secret.as_str().expect("token").to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_it_sends_a_prediction_and_the_report_charts_latency_and_accuracy() {
    const NAME: &str = "try_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    deploy_example(&server, &work, NAME, "ml");
    let browser = Browser::start("tryit").await;
    browser.sign_in(&server).await;
    browser
        .goto(&format!("{}/services/{NAME}", server.url()))
        .await;

    // The request is pre-filled from the model's signature, and valid.
    let request = browser
        .wait_js(
            "the pre-filled request",
            PAGE,
            "const t = document.querySelector('[data-test=try-request]'); return t && t.value;",
        )
        .await;
    let request: Value = serde_json::from_str(request.as_str().expect("text"))
        .unwrap_or_else(|e| panic!("the example is not JSON ({e}): {request}"));
    let (_, detail) = server.admin("GET", &format!("/api/v2/services/{NAME}"), b"");
    let inputs = detail["signature"]["inputs"].as_array().expect("signature");
    assert_eq!(
        request["inputs"].as_array().map(Vec::len),
        Some(inputs.len()),
        "{request}"
    );
    assert_eq!(request["inputs"][0]["name"], inputs[0]["name"], "{request}");
    assert!(
        request["inputs"][0]["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .all(|d| d.as_i64().unwrap_or(0) >= 1),
        "dynamic dimensions become 1: {request}"
    );

    browser.click("Send", "[data-test=try-send]").await;
    let result = browser
        .wait_js(
            "the prediction's output",
            PAGE,
            "const r = document.querySelector('[data-test=try-result]'); \
             if (!r) return null; r.scrollIntoView(); \
             return { latency: r.querySelector('[data-test=try-latency]').textContent, \
                      outputs: [...r.querySelectorAll('[data-test=try-output]')].map(o => \
                          [...o.querySelectorAll('td')].map(td => td.textContent)) };",
        )
        .await;
    let outputs = result["outputs"].as_array().expect("output rows");
    let expected = detail["signature"]["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), expected.len(), "{result}");
    assert_eq!(outputs[0][0], expected[0]["name"], "{result}");
    assert!(
        outputs[0][3].as_str().is_some_and(|v| !v.is_empty()),
        "first values shown: {result}"
    );
    assert!(
        result["latency"]
            .as_str()
            .is_some_and(|l| l.contains(" ms")),
        "{result}"
    );
    browser.screenshot("1-output").await;

    // A request the model refuses is a message from the server, not a blank.
    browser
        .type_into(
            "the request",
            "[data-test=try-request]",
            r#"{"inputs":[{"name":"no_such_input","shape":[1,4],"datatype":"FP32","data":[0,0,0,0]}]}"#,
        )
        .await;
    browser.click("Send", "[data-test=try-send]").await;
    browser
        .wait_js(
            "the server's refusal",
            PAGE,
            "const e = document.querySelector('[data-test=try-it] .error-box'); \
             return e && e.textContent.includes('no_such_input')",
        )
        .await;
    browser.screenshot("2-refused").await;

    // The report: latency against the original per shape group, and one
    // accuracy row per verified candidate.
    let candidates = detail["report"]["candidates"].as_array().expect("report");
    let verified = candidates
        .iter()
        .filter(|c| !c["max_rel_error"].is_null() || !c["min_cosine"].is_null())
        .count();
    let charts = browser
        .wait_js(
            "the report's charts",
            PAGE,
            "const a = document.querySelector('[data-test=accuracy-chart]'); \
             const l = document.querySelector('[data-test=latency-chart]'); \
             if (!a || !l) return null; l.scrollIntoView(); \
             return { rows: a.querySelectorAll('g.acc').length, \
                      originalLines: l.querySelectorAll('line.chart-original').length, \
                      groups: l.querySelectorAll('text.chart-group').length, \
                      text: a.textContent };",
        )
        .await;
    assert_eq!(charts["rows"], json!(verified), "{charts}");
    let groups = detail["report"]["diagnosis"]["shape_groups"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0);
    assert_eq!(charts["groups"], json!(groups), "{charts}");
    assert_eq!(
        charts["originalLines"],
        json!(groups),
        "the original's latency is marked in every shape group: {charts}"
    );
    assert!(
        charts["text"]
            .as_str()
            .unwrap_or_default()
            .contains("exact"),
        "the original is exact against itself: {charts}"
    );
    browser.screenshot("3-report-charts").await;

    // One set of numbers: the headline is the selected row's; small times
    // in µs; the precision served in words; axis ticks and p90 whiskers.
    let words = browser
        .wait_js(
            "the report's headline",
            PAGE,
            "const s = document.querySelector('[data-test=report-summary]');              const p = document.querySelector('[data-test=report-precision]');              const l = document.querySelector('[data-test=latency-chart]');              if (!s || !p || !l) return null;              return { summary: s.innerText, precision: p.innerText,                       ticks: l.querySelectorAll('.chart-axis text').length,                       whiskers: l.querySelectorAll('line.chart-p90').length };",
        )
        .await;
    let summary = words["summary"].as_str().unwrap_or_default();
    let report = &detail["report"];
    let selected = report["selected"].as_str().unwrap_or_default();
    assert!(summary.contains(selected), "{words}");
    assert!(
        summary.contains("µs"),
        "a model this small is timed in µs: {words}"
    );
    assert!(
        words["precision"]
            .as_str()
            .unwrap_or_default()
            .contains("FP32"),
        "{words}"
    );
    assert!(words["ticks"].as_u64().unwrap_or(0) >= 3, "{words}");
    assert!(words["whiskers"].as_u64().unwrap_or(0) >= 2, "{words}");

    // Downloads: the report as JSON and CSV, and the artifact itself.
    browser
        .click("report (JSON)", "[data-test=download-json]")
        .await;
    let stem = format!("report-{}", selected.replace(['@', '/'], "-"));
    let json_file: Value =
        serde_json::from_slice(&browser.downloaded(&format!("{stem}.json")).await)
            .expect("the report as JSON");
    assert_eq!(json_file["selected"], report["selected"]);
    browser
        .click("report (CSV)", "[data-test=download-csv]")
        .await;
    let csv = String::from_utf8(browser.downloaded(&format!("{stem}.csv")).await).expect("CSV");
    assert!(csv.starts_with("candidate,status,p50_ms"), "{csv}");
    assert_eq!(csv.lines().count(), candidates.len() + 1, "{csv}");
    browser
        .click("artifact (.tar)", "[data-test=download-artifact]")
        .await;
    let name = detail["name"].as_str().unwrap_or_default();
    let tar = browser.downloaded(&format!("{name}-artifact.tar")).await;
    let text = String::from_utf8_lossy(&tar);
    for file in ["artifact.json", "checksums.json", "model.onnx"] {
        assert!(text.contains(file), "the artifact's tar holds {file}");
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_upload_shows_progress_and_fills_model_path() {
    let _serial = one_at_a_time().await;
    let zoo = zoo();
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    let browser = Browser::start("upload").await;
    browser.sign_in(&server).await;
    browser.goto(&format!("{}/new", server.url())).await;
    browser
        .wait_for("the upload field", "[data-test=upload-file]")
        .await;

    // Records every value the progress bar shows, as the page renders it.
    browser
        .js(
            "window.__progress = []; \
             const note = () => { const p = document.querySelector('[data-test=upload-progress]'); \
                 if (p) { const v = Number(p.getAttribute('value')); \
                          if (window.__progress[window.__progress.length - 1] !== v) window.__progress.push(v); } }; \
             new MutationObserver(note).observe(document.body, \
                 { childList: true, subtree: true, attributes: true, attributeFilter: ['value'] });",
            vec![],
        )
        .await;
    // MiniLM is 90 MB: large enough for the bar to move. chromedriver takes
    // canonical paths only.
    let model = zoo
        .join("minilm.onnx")
        .canonicalize()
        .expect("the zoo's MiniLM");
    let file = browser
        .wait_for("the upload field", "[data-test=upload-file]")
        .await;
    file.send_keys(model.to_str().expect("UTF-8 path"))
        .await
        .expect("choose the file");
    // Caught mid-way when the machine lets it; the recorded values below are
    // what the assertion uses.
    browser
        .wait_js(
            "the progress bar moving (or the upload done)",
            Duration::from_secs(120),
            "const p = document.querySelector('[data-test=upload-progress]'); \
             const v = p ? Number(p.getAttribute('value')) : 0; \
             return (v > 0 && v < 100) || document.querySelector('[data-test=uploaded-path]') !== null;",
        )
        .await;
    browser.screenshot("1-progress").await;
    let done = browser
        .wait_js(
            "the uploaded model_path",
            Duration::from_secs(120),
            "const p = document.querySelector('[data-test=uploaded-path]'); \
             return p && { path: p.textContent, \
                           config: document.querySelector('[data-test=config-editor]').value, \
                           valid: document.querySelector('[data-test=validation]').textContent, \
                           progress: window.__progress };",
        )
        .await;
    eprintln!("progress values shown: {}", done["progress"]);
    let path = done["path"].as_str().expect("path");
    assert!(
        path.starts_with("upload://") && path.ends_with("/minilm.onnx"),
        "{done}"
    );
    let config: Value = serde_json::from_str(done["config"].as_str().expect("config"))
        .expect("the editor still holds JSON");
    assert_eq!(
        config["model_path"],
        json!(path),
        "the path is in the config: {done}"
    );
    // The processor follows the file: the example's TensorFlow one is no
    // use for an .onnx.
    assert_eq!(config["processor"], json!("onnx_cpu"), "{done}");
    // The uploaded path is one the server reads: once it has checked, only
    // the example's placeholder resource group is left to fix.
    let checked = browser
        .wait_js(
            "the server's check of the uploaded path",
            PAGE,
            "if (!document.querySelector('[data-test=server-problems]')) return null; \
             return [...document.querySelectorAll('[data-test=validation] code.path')].map(c => c.textContent);",
        )
        .await;
    assert_eq!(checked, json!(["resource"]), "{done}");
    let seen: Vec<f64> = done["progress"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        seen.iter().any(|v| *v > 0.0 && *v < 100.0) && seen.last() == Some(&100.0),
        "the bar moved through intermediate values to 100%: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "progress only grows: {seen:?}"
    );
    // The server kept what the page sent.
    let sha = path
        .trim_start_matches("upload://")
        .split('/')
        .next()
        .expect("sha");
    assert!(
        server
            .data
            .join("uploads")
            .join(sha)
            .join("minilm.onnx")
            .is_file(),
        "upload stored under its hash"
    );
    browser.screenshot("2-filled").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_link_works_signed_out_until_revoked() {
    const NAME: &str = "shared_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    deploy_example(&server, &work, NAME, "ml");
    let browser = Browser::start("share").await;
    browser.sign_in(&server).await;
    let service_page = format!("{}/services/{NAME}", server.url());
    browser.goto(&service_page).await;
    browser
        .click("Create a read-only link", "[data-test=share-create]")
        .await;
    let href = browser
        .wait_js(
            "the new link in the list",
            PAGE,
            "const a = document.querySelector('[data-test=share-url]'); \
             if (!a) return null; a.scrollIntoView(); return a.getAttribute('href');",
        )
        .await;
    let href = href.as_str().expect("href").to_string();
    assert!(href.starts_with("/s/"), "{href}");
    browser.screenshot("1-created").await;

    // Signed out, the link shows status, log and report.
    browser.click("Sign out", "header.topbar button.link").await;
    browser
        .wait_for("the sign-in form", "form[data-test=signin]")
        .await;
    browser.goto(&format!("{}{href}", server.url())).await;
    let shown = browser
        .wait_js(
            "the shared service",
            PAGE,
            "const o = document.querySelector('[data-test=service-overview] .status'); \
             const rows = document.querySelectorAll('[data-test=deploy-log] [data-id]').length; \
             const state = document.querySelector('[data-test=log-state]')?.textContent ?? ''; \
             const report = document.querySelector('[data-test=report] figure.chart svg'); \
             if (!o || rows === 0 || !report || !state.startsWith('Deploy finished')) return null; \
             return { status: o.textContent, rows, \
                      name: document.querySelector('[data-test=service-name]').textContent, \
                      signin: document.querySelector('form[data-test=signin]') !== null, \
                      text: document.querySelector('main').innerText };",
        )
        .await;
    assert_eq!(shown["status"], json!("Running"), "{shown}");
    assert_eq!(shown["name"], json!(NAME), "{shown}");
    assert_eq!(shown["signin"], json!(false), "no sign-in asked: {shown}");
    assert!(
        !shown["text"].as_str().unwrap_or_default().contains(
            &admin_ok(
                &server,
                "GET",
                &format!("/api/v2/services/{NAME}"),
                Value::Null
            )["token"]
                .as_str()
                .unwrap_or("no token")
                .to_string()
        ),
        "the service token is not shown"
    );
    let stored = api_log(&server, NAME);
    assert_eq!(shown["rows"], json!(stored.len()), "the whole log: {shown}");
    browser.screenshot("2-signed-out").await;

    // Revoked from the service page, the link says it is gone, and so does the API.
    browser.sign_in(&server).await;
    browser.goto(&service_page).await;
    browser.click("Revoke", "[data-test=share-revoke]").await;
    browser
        .wait_js(
            "the link to leave the list",
            PAGE,
            "return document.querySelector('[data-test=shares]')?.textContent.includes('No links yet')",
        )
        .await;
    browser.click("Sign out", "header.topbar button.link").await;
    browser
        .wait_for("the sign-in form", "form[data-test=signin]")
        .await;
    browser.goto(&format!("{}{href}", server.url())).await;
    browser
        .wait_js(
            "the not-found message",
            PAGE,
            "return document.querySelector('[data-test=share-gone]')?.textContent \
                 .includes('This link does not exist or was revoked')",
        )
        .await;
    let api_path = href.replacen("/s/", "/api/v2/shared/", 1);
    let (status, body) = server.http("GET", &api_path, None, b"");
    assert_eq!(status, 404, "{body}");
    browser.screenshot("3-revoked").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_actions_and_the_api_refuses_their_delete() {
    const NAME: &str = "viewed_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    deploy_example(&server, &work, NAME, "ml");
    let vera = user_with_role(&server, "vera", "ml", "viewer");

    let browser = Browser::start("viewer").await;
    browser.sign_in_as(&server, &vera, "vera").await;
    browser
        .goto(&format!("{}/services/{NAME}", server.url()))
        .await;
    let page = browser
        .wait_js(
            "the service page as a viewer",
            PAGE,
            "const o = document.querySelector('[data-test=service-overview] .status'); \
             if (!o || !document.querySelector('header [data-test=user]')) return null; \
             return { status: o.textContent, \
                      delete: document.querySelector('[data-test=delete]') !== null, \
                      actions: document.querySelector('[data-test=service-actions]') !== null, \
                      share: document.querySelector('[data-test=shares]') !== null, \
                      tokenHidden: document.querySelector('[data-test=token-hidden]') !== null, \
                      newService: document.querySelector('header a[href=\"/new\"]') !== null, \
                      buttons: [...document.querySelectorAll('main button')].map(b => b.textContent) };",
        )
        .await;
    assert_eq!(page["status"], json!("Running"), "{page}");
    assert_eq!(
        page["delete"],
        json!(false),
        "no Delete for a viewer: {page}"
    );
    assert_eq!(page["actions"], json!(false), "no Scale/Stop/Start: {page}");
    assert_eq!(page["share"], json!(false), "no Share: {page}");
    assert_eq!(
        page["tokenHidden"],
        json!(true),
        "the token is a deployer's: {page}"
    );
    assert_eq!(page["newService"], json!(false), "no New service: {page}");
    for b in page["buttons"].as_array().expect("buttons") {
        let b = b.as_str().unwrap_or_default();
        for forbidden in ["Delete", "Scale", "Stop", "Start"] {
            assert!(!b.starts_with(forbidden), "a viewer sees {b:?}: {page}");
        }
    }
    browser.screenshot("1-service").await;

    // The server refuses regardless of what the page shows.
    let (status, answer) = api_as(
        &server,
        &vera,
        "DELETE",
        &format!("/api/v2/services/{NAME}"),
        Value::Null,
    );
    assert!(
        !(200..300).contains(&status),
        "a viewer's delete answered {status}: {answer}"
    );
    let (status, _) = server.admin("GET", &format!("/api/v2/services/{NAME}"), b"");
    assert_eq!(status, 200, "the service is still there");

    // Her account page: a second token, shown once, then revoked.
    browser
        .click("the account link", "header [data-test=user]")
        .await;
    let spare = browser.create_token("spare").await;
    assert_eq!(
        api_as(&server, &spare, "GET", "/api/v2/me", Value::Null).0,
        200
    );
    browser.screenshot("2-account").await;
    // A deep link: after a reload the account page lists both tokens again
    // (the secret itself is gone for good).
    browser.client.refresh().await.expect("reload");
    browser
        .wait_js(
            "the account page after a reload",
            PAGE,
            "return document.querySelectorAll('[data-test=token-row]').length === 2 \
                 && document.querySelector('[data-test=shown-once]') === null",
        )
        .await;
    // The token this console is signed in with is marked; the spare is not.
    let marked = browser
        .wait_js(
            "the token in use marked",
            PAGE,
            "const m = [...document.querySelectorAll('[data-test=token-row]')] \
                 .filter(r => r.querySelector('[data-test=token-in-use]')).map(r => r.dataset.name); \
             return m.length ? m : null;",
        )
        .await;
    assert_eq!(marked, json!(["browser test"]), "{marked}");
    browser
        .click(
            "Revoke…",
            "[data-test=token-row][data-name=spare] [data-test=token-revoke]",
        )
        .await;
    // Asked first: until confirmed, the token still works.
    browser
        .wait_for(
            "the revoke confirmation",
            "[data-test=token-row][data-name=spare] [data-test=confirm-revoke]",
        )
        .await;
    browser.screenshot("3-confirm-revoke").await;
    assert_eq!(
        api_as(&server, &spare, "GET", "/api/v2/me", Value::Null).0,
        200,
        "not revoked before it is confirmed"
    );
    browser
        .click(
            "Revoke",
            "[data-test=token-row][data-name=spare] [data-test=token-revoke-confirm]",
        )
        .await;
    browser
        .wait_js(
            "the token marked revoked",
            PAGE,
            "const r = document.querySelector('[data-test=token-row][data-name=spare]'); \
             return r && !r.querySelector('[data-test=token-revoke]');",
        )
        .await;
    assert_eq!(
        api_as(&server, &spare, "GET", "/api/v2/me", Value::Null).0,
        401,
        "a revoked token is refused"
    );
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_dashboard_and_settings_render_and_admins_change_members() {
    const NAME: &str = "team_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    let example = deploy_example(&server, &work, NAME, "ml");
    // One prediction, so the last hour has traffic.
    let detail = admin_ok(
        &server,
        "GET",
        &format!("/api/v2/services/{NAME}"),
        Value::Null,
    );
    let request = std::fs::read(example.join("request.json")).expect("request.json");
    let (status, body) = server.http(
        "POST",
        &format!("/api/predict/{NAME}"),
        detail["token"].as_str(),
        &request,
    );
    assert_eq!(status, 200, "{body}");
    admin_ok(&server, "POST", "/api/v2/users", json!({ "name": "dana" }));

    let browser = Browser::start("team").await;
    browser
        .sign_in_as(&server, &server.admin_token(), "admin")
        .await;
    // Through the top bar's team link.
    browser
        .click(
            "the team link",
            "header [data-test=team-link][href='/teams/ml']",
        )
        .await;
    let stats = browser
        .wait_js(
            "the dashboard's figures",
            PAGE,
            "const s = [...document.querySelectorAll('[data-test=stat]')]; \
             if (s.length === 0 || !document.querySelector('table.services')) return null; \
             return Object.fromEntries(s.map(e => [e.querySelector('.stat-label').textContent, \
                                                   e.querySelector('.stat-value').textContent]));",
        )
        .await;
    assert_eq!(stats["Services"], json!("1"), "{stats}");
    assert_eq!(stats["Instances"], json!("1 / 1"), "{stats}");
    assert_eq!(stats["Requests, last hour"], json!("1"), "{stats}");
    assert!(
        stats["p50 latency, last hour"]
            .as_str()
            .is_some_and(|v| v.ends_with(" ms") || v.ends_with(" µs")),
        "{stats}"
    );
    browser.screenshot("1-dashboard").await;

    // Settings: add dana as a deployer, then make her a viewer.
    browser
        .click("Members & settings", "[data-test=team-settings-link]")
        .await;
    browser
        .type_into(
            "the new member's name",
            "[data-test=add-member] input[name=name]",
            "dana",
        )
        .await;
    let role = browser
        .wait_for("the new member's role", "[data-test=add-member] select")
        .await;
    role.select_by_value("deployer").await.expect("pick a role");
    browser
        .click("Add", "[data-test=add-member] button[type=submit]")
        .await;
    browser
        .wait_js(
            "dana in the member list",
            PAGE,
            "return document.querySelector('[data-test=member][data-user=dana] select')?.value === 'deployer'",
        )
        .await;
    let select = browser
        .wait_for("dana's role", "[data-test=member][data-user=dana] select")
        .await;
    select
        .select_by_value("viewer")
        .await
        .expect("change the role");
    let started = Instant::now();
    loop {
        let team = admin_ok(&server, "GET", "/api/v2/teams/ml", Value::Null);
        let role = team["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["user"] == json!("dana")))
            .map(|m| m["role"].clone());
        if role == Some(json!("viewer")) {
            break;
        }
        assert!(started.elapsed() < PAGE, "dana is not a viewer: {team}");
        tokio::time::sleep(POLL).await;
    }
    // Let the team's viewers see tokens and share links: the box is ticked
    // and the server keeps it.
    browser
        .click(
            "the viewers-see-secrets box",
            "[data-test=viewers-see-secrets] input[type=checkbox]",
        )
        .await;
    let started = Instant::now();
    while admin_ok(&server, "GET", "/api/v2/teams/ml", Value::Null)["viewers_see_secrets"]
        != json!(true)
    {
        assert!(started.elapsed() < PAGE, "the setting was not kept");
        tokio::time::sleep(POLL).await;
    }
    browser.screenshot("2-settings").await;

    // The settings page is a deep link: a reload shows it again, with the
    // role the server kept. Then dana is removed.
    browser.client.refresh().await.expect("reload");
    browser
        .wait_js(
            "the members after a reload",
            PAGE,
            "return document.querySelector('[data-test=member][data-user=dana] select')?.value === 'viewer'",
        )
        .await;
    browser
        .click(
            "Remove",
            "[data-test=member][data-user=dana] [data-test=member-remove]",
        )
        .await;
    browser
        .wait_js(
            "dana to leave the list",
            PAGE,
            "return document.querySelector('[data-test=members]') !== null \
                 && document.querySelector('[data-test=member][data-user=dana]') === null \
                 && document.querySelector('[data-test=member][data-user=admin] select')?.value === 'admin'",
        )
        .await;
    let team = admin_ok(&server, "GET", "/api/v2/teams/ml", Value::Null);
    assert!(
        !team.to_string().contains("\"dana\""),
        "dana is no longer a member: {team}"
    );

    // The admin page: create a user and a token for them, shown once.
    browser.goto(&format!("{}/admin", server.url())).await;
    browser
        .type_into(
            "the new user's name",
            "[data-test=user-create] input[name=name]",
            "eve",
        )
        .await;
    browser
        .click("Create user", "[data-test=user-create] button[type=submit]")
        .await;
    let secret = browser.create_token("laptop").await;
    let (status, me) = api_as(&server, &secret, "GET", "/api/v2/me", Value::Null);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"], json!("eve"), "{me}");
    browser.screenshot("3-admin").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_list_and_a_rollback_from_the_service_page() {
    const NAME: &str = "versioned_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    let dir = deploy_example(&server, &work, NAME, "ml");
    // A modify makes version 2 (two instances).
    let config = dir.join("service.json");
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(&config).expect("service.json")).expect("JSON");
    cfg["metadata"]["instance"] = json!(2);
    std::fs::write(&config, cfg.to_string()).expect("write service.json");
    let out = server
        .cli(&["modify", NAME, "-s", config.to_str().expect("UTF-8 path")])
        .output()
        .expect("whet modify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let browser = Browser::start("versions").await;
    browser.sign_in(&server).await;
    browser
        .goto(&format!("{}/services/{NAME}", server.url()))
        .await;
    let rows = browser
        .wait_js(
            "both versions, v2 served",
            PAGE,
            "const rows = [...document.querySelectorAll('[data-test=version]')]; \
             if (rows.length !== 2) return null; \
             rows[0].scrollIntoView(); \
             return rows.map(r => r.innerText);",
        )
        .await;
    let rows: Vec<String> = serde_json::from_value(rows).expect("rows");
    assert!(
        rows[0].starts_with("v2") && rows[0].contains("served"),
        "{rows:?}"
    );
    assert!(
        rows[1].starts_with("v1") && rows[1].contains("Roll back to v1"),
        "{rows:?}"
    );
    browser.screenshot("1-versions").await;

    // Asked first, then served again from its own artifact.
    browser
        .click("Roll back to v1", "[data-test=serve-version]")
        .await;
    browser
        .wait_for("the confirmation", "[data-test=confirm-serve]")
        .await;
    browser.screenshot("2-confirm").await;
    browser
        .click("Serve v1", "[data-test=confirm-serve-button]")
        .await;
    browser
        .wait_js(
            "v1 marked served",
            PAGE,
            "const rows = [...document.querySelectorAll('[data-test=version]')]; \
             return rows.length === 2 && rows[1].innerText.includes('served') \
                 && !rows[0].innerText.includes('✓') ? true : null;",
        )
        .await;
    let mut detail = poll_api(&server, &format!("/api/v2/services/{NAME}"), |d| {
        d["status"] == json!("Running") && d["instances"] == json!(1)
    })
    .await;
    assert_eq!(
        (
            &detail["current_version"],
            &detail["latest_version"],
            &detail["instances"]
        ),
        (&json!(1), &json!(2), &json!(1)),
        "{detail}"
    );
    browser.screenshot("3-rolled-back").await;

    // A canary: 20 % to version 2 beside version 1, typed into the split
    // editor, which refuses shares that do not sum to 100.
    browser
        .click("Split traffic…", "[data-test=split-traffic]")
        .await;
    browser
        .type_into(
            "v1's share",
            "[data-test=split-editor] label:nth-of-type(1) input",
            "80",
        )
        .await;
    browser
        .type_into(
            "v2's share",
            "[data-test=split-editor] label:nth-of-type(2) input",
            "30",
        )
        .await;
    browser
        .wait_js(
            "the sum refused",
            PAGE,
            "return document.querySelector('[data-test=share-sum]')?.innerText.includes('110')                  && document.querySelector('[data-test=apply-split]').disabled || null",
        )
        .await;
    browser
        .type_into(
            "v2's share",
            "[data-test=split-editor] label:nth-of-type(2) input",
            "20",
        )
        .await;
    browser.screenshot("4-split-editor").await;
    browser
        .click("Apply split", "[data-test=apply-split]")
        .await;
    browser
        .wait_js(
            "the shares in the table",
            PAGE,
            "const rows = [...document.querySelectorAll('[data-test=version]')].map(r => r.innerText);              return rows.length === 2 && rows[0].includes('20 %') && rows[0].includes('beside')                  && rows[1].includes('80 %') ? rows : null;",
        )
        .await;
    let split = poll_api(&server, &format!("/api/v2/services/{NAME}/traffic"), |s| {
        s["versions"][1]["running"] == json!(2)
    })
    .await;
    assert_eq!(split["versions"][1]["weight"], json!(20), "{split}");
    assert_eq!(split["versions"][1]["running"], json!(2), "{split}");
    browser.client.refresh().await.expect("reload");
    browser
        .wait_for("the promote button", "[data-test=promote-version]")
        .await;
    browser.screenshot("5-split").await;

    // Promote version 2, asked first: it becomes the version served and the
    // split ends.
    browser
        .click("Promote v2…", "[data-test=promote-version]")
        .await;
    browser
        .wait_js(
            "the promote question",
            PAGE,
            "return document.querySelector('[data-test=confirm-serve]')?.innerText.includes('every request') || null",
        )
        .await;
    browser
        .click("Promote v2", "[data-test=confirm-serve-button]")
        .await;
    let split = poll_api(&server, &format!("/api/v2/services/{NAME}/traffic"), |s| {
        s["versions"].as_array().map(Vec::len) == Some(1)
    })
    .await;
    detail = poll_api(&server, &format!("/api/v2/services/{NAME}"), |d| {
        d["status"] == json!("Running") && d["current_version"] == json!(2)
    })
    .await;
    assert_eq!(detail["current_version"], json!(2), "{detail}");
    assert_eq!(split["versions"][0]["weight"], json!(100), "{split}");
    browser
        .wait_js(
            "v2 served with every request",
            PAGE,
            "const rows = [...document.querySelectorAll('[data-test=version]')].map(r => r.innerText);              return rows.length === 2 && rows[0].includes('served') && rows[0].includes('100 %') ? rows : null;",
        )
        .await;
    browser.screenshot("6-promoted").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_log_shows_a_failed_prediction_with_its_body_and_error() {
    const NAME: &str = "logged_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    deploy_example(&server, &work, NAME, "ml");
    let token = admin_ok(
        &server,
        "GET",
        &format!("/api/v2/services/{NAME}"),
        Value::Null,
    )["token"]
        .as_str()
        .expect("token")
        .to_string();
    // A failed prediction is always kept (the sample rate is 1 % here).
    let bad =
        json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]});
    let (status, _) = server.http(
        "POST",
        &format!("/api/predict/{NAME}"),
        Some(&token),
        bad.to_string().as_bytes(),
    );
    assert_eq!(status, 400);

    let browser = Browser::start("requests").await;
    browser.sign_in(&server).await;
    browser
        .goto(&format!("{}/services/{NAME}", server.url()))
        .await;
    let row = browser
        .wait_js(
            "the failed request in the log",
            PAGE,
            "const r = document.querySelector('[data-test=request]');              if (!r) return null; r.scrollIntoView(); return r.innerText;",
        )
        .await;
    let row = row.as_str().unwrap_or_default().to_string();
    assert!(
        row.contains("400") && row.contains("eas") && row.contains("v1"),
        "{row}"
    );
    browser.click("the request", "[data-test=request]").await;
    let detail = browser
        .wait_js(
            "the request and the error",
            PAGE,
            "const d = document.querySelector('[data-test=request-detail]'); return d ? d.innerText : null;",
        )
        .await;
    let detail = detail.as_str().unwrap_or_default().to_string();
    assert!(
        detail.contains("[1,2,3]") && detail.contains("Error"),
        "{detail}"
    );
    browser.screenshot("1-request-log").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_page_follows_the_lifecycle() {
    const NAME: &str = "lifecycle_mlp";
    const BROKEN: &str = "broken_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    let dir = deploy_example(&server, &work, NAME, "ml");
    let token = admin_ok(
        &server,
        "GET",
        &format!("/api/v2/services/{NAME}"),
        Value::Null,
    )["token"]
        .as_str()
        .expect("token")
        .to_string();
    let good = json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]});
    for _ in 0..5 {
        let (status, _) = server.http(
            "POST",
            &format!("/api/predict/{NAME}"),
            Some(&token),
            good.to_string().as_bytes(),
        );
        assert_eq!(status, 200);
    }

    let browser = Browser::start("lifecycle").await;
    browser.sign_in(&server).await;
    browser
        .goto(&format!("{}/services/{NAME}", server.url()))
        .await;
    // Running: scale and stop, try it, the last hour's numbers, the config.
    let running = browser
        .wait_js(
            "the running service's page",
            PAGE,
            "const m = document.querySelector('[data-test=service-metrics] figcaption');              const c = document.querySelector('[data-test=deployed-config]');              if (!m || !c || !document.querySelector('[data-test=try-it]')) return null;              return { metrics: m.innerText, config: c.value,                       scale: !!document.querySelector('[data-test=scale]'),                       stop: !!document.querySelector('[data-test=stop]'),                       start: !!document.querySelector('[data-test=start]') };",
        )
        .await;
    assert!(
        running["metrics"]
            .as_str()
            .unwrap_or_default()
            .contains("5 requests"),
        "{running}"
    );
    assert!(
        running["config"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("\"{NAME}\"")),
        "{running}"
    );
    assert_eq!(
        (&running["scale"], &running["stop"], &running["start"]),
        (&json!(true), &json!(true), &json!(false)),
        "{running}"
    );
    browser
        .js(
            "document.querySelector('[data-test=service-metrics]').scrollIntoView()",
            vec![],
        )
        .await;
    browser.screenshot("1-running-metrics").await;

    // Edit the deployed config and redeploy: a new version with 2 instances.
    let mut cfg: Value =
        serde_json::from_str(running["config"].as_str().unwrap_or_default()).expect("the config");
    cfg["metadata"]["instance"] = json!(2);
    let edited = serde_json::to_string_pretty(&cfg).expect("JSON");
    browser
        .js(
            "const t = document.querySelector('[data-test=deployed-config]');              t.value = arguments[0]; t.dispatchEvent(new Event('input', { bubbles: true }));",
            vec![json!(edited)],
        )
        .await;
    browser.click("Redeploy", "[data-test=redeploy]").await;
    let detail = poll_api(&server, &format!("/api/v2/services/{NAME}"), |d| {
        d["status"] == json!("Running") && d["current_version"] == json!(2)
    })
    .await;
    assert_eq!(
        (&detail["current_version"], &detail["instances"]),
        (&json!(2), &json!(2)),
        "{detail}"
    );

    // Stopped: no scale, no try-it, a Start.
    browser.click("Stop", "[data-test=stop]").await;
    let stopped = browser
        .wait_js(
            "the stopped service's page",
            PAGE,
            "if (!document.querySelector('[data-test=start]')) return null;              return { scale: !!document.querySelector('[data-test=scale]'),                       tryIt: !!document.querySelector('[data-test=try-it]'),                       note: document.querySelector('[data-test=try-it-later]')?.innerText };",
        )
        .await;
    assert_eq!(
        (&stopped["scale"], &stopped["tryIt"]),
        (&json!(false), &json!(false)),
        "{stopped}"
    );
    assert!(
        stopped["note"]
            .as_str()
            .unwrap_or_default()
            .contains("Stopped"),
        "{stopped}"
    );
    browser.screenshot("2-stopped").await;

    // A deploy that fails (its warm-up requests have 5 values for an input
    // of 4): its log comes first, and the action is to start it again.
    let config = dir.join("service.json");
    let mut broken: Value =
        serde_json::from_slice(&std::fs::read(&config).expect("service.json")).expect("JSON");
    broken["name"] = json!(BROKEN);
    let wrong = optimizer::tensor::Tensor::new(
        vec![2, 5],
        optimizer::tensor::TensorData::F32(vec![0.5; 10]),
    )
    .expect("a tensor");
    optimizer::data::write_npz(&dir.join("model/wrong.npz"), &[("x", &wrong)])
        .expect("write wrong.npz");
    broken["warm_up_data_path"] = json!("wrong.npz");
    let broken_path = dir.join("broken.json");
    std::fs::write(&broken_path, broken.to_string()).expect("write");
    let out = server
        .cli(&[
            "create",
            broken_path.to_str().expect("UTF-8"),
            "--team",
            "ml",
        ])
        .output()
        .expect("whet create");
    // The CLI follows the deploy and reports its failure.
    assert!(
        !out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let detail = poll_api(&server, &format!("/api/v2/services/{BROKEN}"), |d| {
        d["status"] == json!("Failed")
    })
    .await;
    assert_eq!(detail["status"], json!("Failed"), "{detail}");
    browser
        .goto(&format!("{}/services/{BROKEN}", server.url()))
        .await;
    let failed = browser
        .wait_js(
            "the failed service's page",
            PAGE,
            "const log = document.querySelector('[data-test=deploy-log-section]');              const tryIt = document.querySelector('[data-test=try-it-section]');              const start = document.querySelector('[data-test=start]');              if (!log || !tryIt || !start) return null;              return { logFirst: log.getBoundingClientRect().top < tryIt.getBoundingClientRect().top,                       start: start.innerText };",
        )
        .await;
    assert_eq!(failed["logFirst"], json!(true), "{failed}");
    assert_eq!(failed["start"], json!("Start again"), "{failed}");
    browser.screenshot("3-failed-log-first").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_that_does_not_exist_is_said_once_and_not_polled() {
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    let browser = Browser::start("no-team").await;
    browser.sign_in(&server).await;
    browser.goto(&format!("{}/teams/nope", server.url())).await;
    browser
        .wait_js(
            "the not-found message",
            PAGE,
            "return document.querySelector('.error-box')?.textContent.includes('nope') || null",
        )
        .await;
    // Count the page's requests from now on, over more than two refresh periods.
    browser
        .js(
            "window.__calls = 0; const f = window.fetch.bind(window); \
             window.fetch = (...a) => { window.__calls += 1; return f(...a); }; return true;",
            vec![],
        )
        .await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let calls = browser.js("return window.__calls;", vec![]).await;
    assert_eq!(
        calls,
        json!(0),
        "the page kept asking for a team that is not there"
    );
    browser.screenshot("1-not-found").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_signing_out_back_does_not_bring_the_session_back() {
    const NAME: &str = "back_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    deploy_example(&server, &work, NAME, "ml");
    let browser = Browser::start("back").await;
    browser.sign_in(&server).await;
    browser
        .goto(&format!("{}/services/{NAME}", server.url()))
        .await;
    browser
        .wait_for("the service page", "[data-test=service-overview]")
        .await;
    browser.click("Sign out", "header.topbar button.link").await;
    browser
        .wait_for("the sign-in form", "form[data-test=signin]")
        .await;
    browser.client.back().await.expect("history back");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shown = browser
        .js(
            "return { signin: document.querySelector('form[data-test=signin]') !== null, \
                      service: document.querySelector('[data-test=service-overview]') !== null, \
                      stored: localStorage.getItem('whetstone.token') };",
            vec![],
        )
        .await;
    browser.screenshot("1-after-back").await;
    assert_eq!(
        shown["service"],
        json!(false),
        "the service page came back: {shown}"
    );
    assert_eq!(shown["signin"], json!(true), "{shown}");
    assert_eq!(shown["stored"], Value::Null, "{shown}");
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_service_page_follows_a_scale_made_elsewhere() {
    const NAME: &str = "live_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    deploy_example(&server, &work, NAME, "ml");
    let browser = Browser::start("live").await;
    browser.sign_in(&server).await;
    browser
        .goto(&format!("{}/services/{NAME}", server.url()))
        .await;
    browser
        .wait_js(
            "one instance shown",
            PAGE,
            "return document.querySelector('[data-test=service-overview]')?.innerText.includes('1 running of 1') || null",
        )
        .await;
    // Scaled by someone else (the CLI), not through this page.
    let out = server
        .cli(&["scale", NAME, "2"])
        .output()
        .expect("whet scale");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    browser
        .wait_js(
            "the page to show both instances without a reload",
            Duration::from_secs(30),
            "return document.querySelector('[data-test=service-overview]')?.innerText.includes('2 running of 2') || null",
        )
        .await;
    browser.screenshot("1-scaled-elsewhere").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_stream_carries_the_token_outside_its_url() {
    const NAME: &str = "ws_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    deploy_example(&server, &work, NAME, "ml");
    let browser = Browser::start("ws-token").await;
    browser.sign_in(&server).await;
    browser
        .goto(&format!("{}/services/{NAME}", server.url()))
        .await;
    browser
        .wait_for("the scale button", "[data-test=scale]")
        .await;
    // Every WebSocket the page opens from now on, with what it offered.
    browser
        .js(
            "window.__sockets = []; const W = window.WebSocket; \
             window.WebSocket = function (url, protocols) { \
                 window.__sockets.push({ url: String(url), protocols: [].concat(protocols || []) }); \
                 return protocols === undefined ? new W(url) : new W(url, protocols); }; \
             window.WebSocket.prototype = W.prototype; return true;",
            vec![],
        )
        .await;
    // Scaling queues a deploy: the log reconnects, and streams it live.
    browser
        .js(
            "const i = document.querySelector('[data-test=service-actions] input'); \
             i.value = '2'; i.dispatchEvent(new Event('input', { bubbles: true })); return true;",
            vec![],
        )
        .await;
    browser.click("Scale", "[data-test=scale]").await;
    let seen = browser
        .wait_js(
            "the scale streamed live",
            Duration::from_secs(60),
            "const rows = [...document.querySelectorAll('[data-test=deploy-log] [data-id]')].map(r => r.textContent); \
             const state = document.querySelector('[data-test=log-state]')?.textContent ?? ''; \
             if (!rows.some(r => r.includes('Scaling service to 2'))) return null; \
             if (state.startsWith('Stored') || state.startsWith('Log unavailable')) return { failed: state }; \
             return { sockets: window.__sockets, state };",
        )
        .await;
    browser.screenshot("1-streamed").await;
    assert!(
        seen.get("failed").is_none(),
        "the stream did not open: {seen}"
    );
    let sockets = seen["sockets"].as_array().expect("sockets");
    assert!(!sockets.is_empty(), "no stream was opened: {seen}");
    let token = server.admin_token();
    for s in sockets {
        let url = s["url"].as_str().unwrap_or_default();
        assert!(!url.contains("token") && !url.contains(&token), "{s}");
        assert_eq!(s["protocols"][0], json!("whet.v1"), "{s}");
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_390_px_wide_no_page_scrolls_sideways() {
    const NAME: &str = "narrow_mlp";
    let _serial = one_at_a_time().await;
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work);
    deploy_example(&server, &work, NAME, "ml");
    let browser = Browser::start("narrow").await;
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("a phone-sized window");
    browser.sign_in(&server).await;
    let mut wide = Vec::new();
    for (page, ready) in [
        ("/", "[data-test=services-page]"),
        (
            &format!("/services/{NAME}") as &str,
            "[data-test=report] figure.chart svg",
        ),
        ("/new", "textarea[data-test=config-editor]"),
        ("/teams/ml", "[data-test=team-dashboard]"),
        ("/account", "[data-test=tokens]"),
    ] {
        browser.goto(&format!("{}{page}", server.url())).await;
        browser.wait_for(page, ready).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = browser
            .js(
                "const d = document.documentElement; \
                 const nav = document.querySelector('header.topbar'); \
                 return { scroll: d.scrollWidth, client: d.clientWidth, \
                          nav: nav ? nav.scrollWidth - nav.clientWidth : 0 };",
                vec![],
            )
            .await;
        let slug = page.trim_matches('/').replace('/', "-");
        browser
            .screenshot(if slug.is_empty() { "services" } else { &slug })
            .await;
        if m["scroll"].as_i64() > m["client"].as_i64() || m["nav"].as_i64() > Some(0) {
            wide.push(format!("{page}: {m}"));
        }
    }
    assert!(wide.is_empty(), "pages wider than 390 px: {wide:?}");
    browser.close().await;
}
