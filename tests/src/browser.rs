//! A real headless Chromium for the runs pages' tests, driven over
//! WebDriver (fantoccini): each [`Browser`] starts its own chromedriver on
//! a free 127.0.0.1 port, with a profile in its own temp dir, and kills it
//! when dropped. Pages are checked for accessibility with axe-core,
//! injected into the page and run there.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`
//! (`CHROMIUM` and `CHROMEDRIVER` name others); axe-core is the npm
//! package's `axe.min.js`, at `EXECUTOR_AXE` or by default
//! `target/npm/node_modules/axe-core/axe.min.js` (`.ci/run` installs it
//! there). A missing one fails the test saying how to get it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::free_port;

/// How long a wait for the page lasts before the test fails.
const PATIENCE: Duration = Duration::from_secs(180);

/// A headless Chromium session.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// The profile and chromedriver's log.
    dir: tempfile::TempDir,
}

/// The path of a program: `var` when set, else `default`, which must
/// exist; fails the test saying how to install it.
fn program(var: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.exists(),
        "{} not found: the runs pages' tests need Debian's `{package}` \
         (`apt-get install -y {package}`, as .ci/run does) or {var} naming it",
        path.display()
    );
    path
}

/// The axe-core script (see the module doc).
fn axe_source() -> String {
    let path = std::env::var_os("EXECUTOR_AXE").map_or_else(
        || {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/npm/node_modules/axe-core/axe.min.js")
        },
        PathBuf::from,
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core not found at {} ({e}): run `npm install --no-save --prefix target/npm \
             axe-core@4` in the workspace (as .ci/run does) or set EXECUTOR_AXE to axe.min.js",
            path.display()
        )
    })
}

/// Which colour scheme the page is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Light,
    Dark,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width` x
    /// `height` CSS pixels preferring `scheme`.
    #[must_use]
    pub fn start(width: u32, height: u32, scheme: Scheme) -> Self {
        let chromium = program("CHROMIUM", "/usr/bin/chromium", "chromium");
        let chromedriver = program("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver");
        let dir = tempfile::Builder::new()
            .prefix("executor-browser-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut browser = Self {
            runtime,
            client: None,
            driver,
            dir,
        };
        let mut args = vec![
            "--headless=new".to_owned(),
            // Root in CI: Chromium's sandbox refuses to run as root.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            // performance.memory in bytes, not rounded buckets.
            "--enable-precise-memory-info".to_owned(),
            format!("--window-size={width},{height}"),
            format!(
                "--user-data-dir={}",
                browser.dir.path().join("profile").display()
            ),
        ];
        // Blink's preferred colour scheme: 0 dark, 1 light.
        args.push(format!(
            "--blink-settings=preferredColorScheme={}",
            match scheme {
                Scheme::Dark => 0,
                Scheme::Light => 1,
            }
        ));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": args,
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object")
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let attempt = browser.runtime.block_on(async {
                ClientBuilder::rustls()
                    .expect("rustls's native roots")
                    .capabilities(capabilities.clone())
                    .connect(&url)
                    .await
            });
            match attempt {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!(
                    "no WebDriver session from chromedriver at {url}: {e}\n{}",
                    browser.driver_log()
                ),
            }
        };
        browser.client = Some(client);
        browser
    }

    fn driver_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("chromedriver.log")).unwrap_or_default()
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("a session until dropped")
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        self.runtime
            .block_on(self.client().current_url())
            .map(|u| u.to_string())
            .unwrap_or_default()
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.runtime
            .block_on(self.client().execute(script, args))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of the first element matching `css` ("" when none).
    pub fn text(&self, css: &str) -> String {
        let value = self.script(
            "var el = document.querySelector(arguments[0]); return el ? el.innerText : '';",
            vec![json!(css)],
        );
        value.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until `ready` gives a value, failing the test after a few
    /// minutes with `what` and the page's text.
    pub fn wait_for<T>(&self, what: &str, mut ready: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(value) = ready(self) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting: {what}\nat {}:\n{}",
                self.url(),
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the first element matching `css` has text for which
    /// `wanted` holds; answers that text.
    pub fn wait_text(&self, what: &str, css: &str, wanted: impl Fn(&str) -> bool) -> String {
        self.wait_for(what, |b| Some(b.text(css)).filter(|t| wanted(t)))
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        self.runtime.block_on(async {
            let element = self
                .client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css} to click: {e}"));
            element
                .click()
                .await
                .unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
        });
    }

    /// Types `text` into the first element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        self.runtime.block_on(async {
            let element = self
                .client()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css} to type into: {e}"));
            element
                .send_keys(text)
                .await
                .unwrap_or_else(|e| panic!("cannot type into {css}: {e}"));
        });
    }

    /// Marks the loaded page, to tell later that it was never reloaded.
    pub fn mark_page(&self) {
        self.script(
            "window.__executorMark = 'not reloaded'; return null;",
            vec![],
        );
    }

    /// Whether the page marked by [`Browser::mark_page`] is still the one
    /// shown.
    pub fn page_still_marked(&self) -> bool {
        self.script("return window.__executorMark === 'not reloaded';", vec![]) == json!(true)
    }

    /// Saves a PNG of the window at `path`.
    pub fn screenshot(&self, path: &Path) {
        let png = self
            .runtime
            .block_on(self.client().screenshot())
            .unwrap_or_else(|e| panic!("no screenshot: {e}"));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Runs axe-core on the page; fails the test listing every violation
    /// (rule, impact, what to do, the elements) under `page`'s name.
    pub fn assert_accessible(&self, page: &str) {
        let source = axe_source();
        self.script(&format!("{source}\n;return null;"), vec![]);
        let result = self
            .runtime
            .block_on(self.client().execute_async(
                "var done = arguments[arguments.length - 1];\
                 axe.run(document, { resultTypes: ['violations'] })\
                   .then(function (r) { done(r.violations.map(function (v) {\
                     return { id: v.id, impact: v.impact, help: v.help,\
                       nodes: v.nodes.map(function (n) {\
                         return n.target.join(' ') + ': ' + n.failureSummary; }) }; })); },\
                     function (e) { done({ error: String(e) }); });",
                vec![],
            ))
            .unwrap_or_else(|e| panic!("axe-core did not run on {page}: {e}"));
        assert!(
            result.as_array().is_some_and(Vec::is_empty),
            "{page} ({}) has accessibility violations:\n{}",
            self.url(),
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), client.close()).await
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
