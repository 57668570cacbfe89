"""Staff sessions in a real Chromium against a live gunicorn: CSP, HSTS, cookies, session lifetime, 2FA.

Each test starts gunicorn on a database of its own (SQLite under tmp_path, a
copy of one the module migrated once with ``manage.py migrate``), makes its
staff accounts with ``manage.py shell``, and logs in through the real login form.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from django_otp.oath import totp

from tests import conftest
from tests.conftest import ROOT, LiveGunicorn, needs_chromium
from tests.manage_runner import run_manage
from tests.tcp_state import wait_for

pytestmark = [pytest.mark.browser, needs_chromium]

PASSWORD = "staff-pass-123"
# Made in the page before its own scripts run: every CSP violation it reports.
WATCH_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""


@dataclass
class StaffService:
    """A live gunicorn and the environment its database was made with."""

    server: LiveGunicorn
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def shell(self, code: str) -> str:
        """Run ``code`` in ``manage.py shell`` on the service's database; its last line of output."""
        result = run_manage(["shell", "-c", code], env=self.env, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""

    def add_staff(self, username: str, group: str | None = None, *, superuser: bool = False) -> None:
        self.add_staff_accounts((username, group), superuser=superuser)

    def add_staff_accounts(self, *accounts: tuple[str, str | None], superuser: bool = False) -> None:
        """Make staff accounts, each (username, support group or None), in one ``manage.py shell``."""
        code = (
            "from django.contrib.auth.models import User\n"
            "from dashboard.roles import ensure_support_groups\n"
            f"maker = User.objects.create_superuser if {superuser} else User.objects.create_user\n"
        )
        for username, group in accounts:
            code += (
                f"user = maker({username!r}, password={PASSWORD!r}, is_staff=True)\n"
                f"if {group!r}: user.groups.add(ensure_support_groups()[{group!r}])\n"
            )
        self.shell(code)

    def enrol_totp(self, username: str) -> bytes:
        """Enrol a TOTP device with the operator command; its key (one ``manage.py shell``)."""
        return bytes.fromhex(
            self.shell(
                f"from django.core.management import call_command; call_command('enrol_totp', {username!r})\n"
                "from django_otp.plugins.otp_totp.models import TOTPDevice\n"
                f"print(TOTPDevice.objects.get(user__username={username!r}).key)"
            )
        )

    def age_session(self, session_key: str, **seconds_ago: float) -> None:
        """Move the session's clocks back (``staff_login_at=...``, ``staff_seen_at=...``)."""
        self.shell(
            "import time\n"
            "from django.contrib.sessions.backends.db import SessionStore\n"
            f"s = SessionStore(session_key={session_key!r})\n"
            f"for name, ago in {seconds_ago!r}.items(): s[name] = time.time() - ago\n"
            "s.save()\n"
        )


@pytest.fixture(scope="module")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once for the module: each test's database starts as a copy of it.

    Migrations make the same schema, groups and permissions whatever the test's
    settings; one ``manage.py migrate`` takes seconds on a busy machine.
    """
    path = tmp_path_factory.mktemp("staff-database") / "migrated.sqlite3"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{path}", "STREAMLIMIT_VAR_DIR": str(ROOT / "var")}
    run_manage(["migrate", "-v0"], env=env, check=True)
    return path


@pytest.fixture
def staff_service(live_gunicorn, tmp_path: Path, migrated_database: Path) -> Callable[..., StaffService]:
    """Start gunicorn (one worker) with ``env`` on a migrated database of its own (a copy of the module's)."""

    def start(**env: str) -> StaffService:
        full = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'staff.sqlite3'}",
            "STREAMLIMIT_VAR_DIR": str(ROOT / "var"),
            **env,
        }
        if not (tmp_path / "staff.sqlite3").exists():  # a second service of the test shares the first's
            shutil.copyfile(migrated_database, tmp_path / "staff.sqlite3")
        server = live_gunicorn(workers=1, **{k: v for k, v in full.items() if k not in os.environ or k in env})
        return StaffService(server, full)

    return start


@pytest.fixture
def context(chromium) -> Iterator:
    context = chromium.new_context()
    context.add_init_script(WATCH_VIOLATIONS)
    yield context
    context.close()


def log_in(page, base_url: str, username: str, code: str = "", next_path: str = "/dashboard/"):
    """Fill and send the real login form; the answer to the post."""
    page.goto(f"{base_url}/admin/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD if username else "")
    if code:
        page.fill("#id_otp_token", code)
    with page.expect_navigation() as navigation:
        page.click("input[type=submit]")
    return navigation.value


def session_cookie(context) -> dict:
    return next(c for c in context.cookies() if c["name"] == "sessionid")


def violations(page) -> list[str]:
    return page.evaluate("window.__violations")


def test_every_staff_page_has_a_strict_csp_and_works_without_a_violation(staff_service, context) -> None:
    service = staff_service(STREAMLIMIT_DEMO="true")
    service.add_staff("ops", superuser=True)
    page = context.new_page()
    console_errors: list[str] = []
    # The browser's own request for /favicon.ico (the service has none) is not a page's doing.
    page.on(
        "console",
        lambda m: (
            console_errors.append(f"{m.text} {m.location}")
            if m.type == "error" and not m.location["url"].endswith("/favicon.ico")
            else None
        ),
    )
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    assert log_in(page, service.url, "ops").status == 200
    assert page.url == f"{service.url}/dashboard/"

    pages = {
        "/dashboard/": "#stat-live-sessions",
        "/dashboard/users/": "#content",
        "/dashboard/sharing/": "#content",
        "/dashboard/policy/": "#policy-form",
        "/dashboard/user/?id=account-7": "#user-id",
        "/admin/": "#streamlimit-link",
        "/admin/dashboard/auditrecord/": "#changelist",
        "/admin/auth/user/": "#changelist",
        "/admin/auth/user/add/": "#user_form",
        "/api/docs/": ".swagger-ui .info .title",
        "/demo/": "#setup",
    }
    for path, shown in pages.items():
        response = page.goto(f"{service.url}{path}")
        assert response.status == 200, path
        policy = response.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["script-src"] == "'self'", path
        assert directives["style-src"] == "'self'", path
        assert directives["default-src"] == "'self'" and directives["frame-ancestors"] == "'none'", path
        page.wait_for_selector(shown)
        assert violations(page) == [], path
    # The API docs drew the schema (their start-up script ran, from a file).
    page.goto(f"{service.url}/api/docs/")
    assert "StreamLimit API" in page.inner_text(".swagger-ui .info .title", timeout=15_000)
    page.wait_for_selector(".opblock-summary-path")
    assert violations(page) == []
    # The demo plays (its scripts, the player library and its Worker timer all allowed).
    page.goto(f"{service.url}/demo/")
    page.fill("#account", "csp-account")
    page.click("#play")
    page.locator("#status[data-state='playing']").wait_for(timeout=15_000)  # a selector: no eval, which the CSP refuses
    assert violations(page) == []
    assert console_errors == []

    # The policy is enforced, not only sent: an inline script put in the page does not run.
    page.goto(f"{service.url}/dashboard/")
    page.evaluate(
        "const s = document.createElement('script'); s.textContent = 'window.__ran = true';"
        " document.body.appendChild(s);"
    )
    # Polled from here: a wait_for_function predicate is a string the page would have to eval, which the CSP refuses.
    wait_for("the blocked script's violation report", lambda: page.evaluate("window.__violations.length") > 0, 15)
    assert page.evaluate("window.__ran === undefined")
    assert violations(page)[0].startswith("script-src-elem inline")


def test_behind_the_https_proxy_hsts_is_sent_and_cookies_are_secure(staff_service, chromium, monkeypatch) -> None:
    # Chromium talks plain http to gunicorn here, so its Origin header says http://; behind a real
    # TLS proxy it would say https://. That one origin is trusted instead, on a port chosen first.
    port = conftest.free_port()
    monkeypatch.setattr(conftest, "free_port", lambda: port)
    service = staff_service(DJANGO_BEHIND_PROXY="true", DJANGO_CSRF_TRUSTED_ORIGINS=f"http://127.0.0.1:{port}")
    service.add_staff("agent", "Support agent")
    # Each request as our nginx passes on one that came in over TLS.
    context = chromium.new_context(extra_http_headers={"X-Forwarded-Proto": "https"})
    page = context.new_page()
    answer = log_in(page, service.url, "agent")
    assert page.url == f"{service.url}/dashboard/"
    assert answer.headers["strict-transport-security"] == "max-age=31536000"
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["sessionid"]["secure"] and cookies["sessionid"]["httpOnly"]
    assert cookies["csrftoken"]["secure"]
    context.close()


def test_over_plain_http_no_hsts_and_cookies_stay_plain(staff_service, context) -> None:
    service = staff_service()
    service.add_staff("agent", "Support agent")
    page = context.new_page()
    answer = log_in(page, service.url, "agent")
    assert page.url == f"{service.url}/dashboard/"
    assert "strict-transport-security" not in answer.headers
    assert not session_cookie(context)["secure"]


def test_a_staff_session_lasts_12_hours_and_ends_after_an_idle_hour(staff_service, context) -> None:
    service = staff_service()
    service.add_staff("agent", "Support agent")
    page = context.new_page()
    log_in(page, service.url, "agent")
    assert page.url == f"{service.url}/dashboard/"
    cookie = session_cookie(context)
    assert abs(cookie["expires"] - (time.time() + 12 * 3600)) < 300

    # 59 idle minutes: still logged in (and the visit counts as activity).
    service.age_session(cookie["value"], staff_seen_at=59 * 60)
    page.goto(f"{service.url}/dashboard/users/")
    assert page.url == f"{service.url}/dashboard/users/"
    # An hour without a request: the next page asks to log in again.
    service.age_session(cookie["value"], staff_seen_at=3601)
    page.goto(f"{service.url}/dashboard/users/")
    assert "/admin/login/" in page.url

    # Active all along, but logged in 12 hours ago: logged out too.
    log_in(page, service.url, "agent")
    assert page.url == f"{service.url}/dashboard/"
    cookie = session_cookie(context)
    service.age_session(cookie["value"], staff_login_at=12 * 3600 + 1, staff_seen_at=10)
    page.goto(f"{service.url}/dashboard/")
    assert "/admin/login/" in page.url


def test_a_refused_next_lands_on_the_dashboard(staff_service, context) -> None:
    service = staff_service()
    service.add_staff("agent", "Support agent")
    page = context.new_page()
    answer = log_in(page, service.url, "agent", next_path="https://evil.example/")
    assert answer.status == 200
    assert page.url == f"{service.url}/dashboard/"


def current_code(key: bytes, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now (or ``steps_ahead`` 30-second steps later)."""
    return f"{totp(key, drift=steps_ahead):06d}"


def error_text(page) -> str:
    return " ".join(page.locator(".errornote, .errorlist").all_inner_texts())


def test_with_2fa_required_staff_who_may_evict_log_in_with_a_real_totp_code(staff_service, chromium) -> None:
    service = staff_service(STAFF_REQUIRE_2FA="true")
    service.add_staff_accounts(("lead", "Support lead"), ("agent", "Support agent"), ("viewer", "Support viewer"))
    key = service.enrol_totp("lead")

    def fresh_page():
        return chromium.new_context().new_page()

    # The lead has a device: the password alone is not enough.
    page = fresh_page()
    log_in(page, service.url, "lead")
    assert "/admin/login/" in page.url and "authentication code" in error_text(page)
    # A wrong code is refused.
    wrong = f"{(int(current_code(key)) + 1) % 1_000_000:06d}"
    log_in(page, service.url, "lead", code=wrong)
    assert "/admin/login/" in page.url and "not valid" in error_text(page)
    # The code the app shows now logs in, and the session counts as verified.
    code = current_code(key)
    log_in(page, service.url, "lead", code=code)
    assert page.url == f"{service.url}/dashboard/"
    page.goto(f"{service.url}/dashboard/user/?id=account-1")
    assert page.locator("#user-id").count() == 1
    # The same code a second time (someone who saw it) is refused.
    other = fresh_page()
    log_in(other, service.url, "lead", code=code)
    assert "/admin/login/" in other.url and "used already" in error_text(other)

    # An agent (may evict) without a device cannot log in at all; a viewer can.
    page = fresh_page()
    log_in(page, service.url, "agent")
    assert "/admin/login/" in page.url and "enrol_totp" in error_text(page)
    page = fresh_page()
    log_in(page, service.url, "viewer")
    assert page.url == f"{service.url}/dashboard/"


def test_a_locked_out_account_still_logs_in_with_its_second_factor(staff_service, chromium) -> None:
    service = staff_service(STAFF_LOGIN_FAILURE_LIMIT="3")
    service.add_staff_accounts(("lead", "Support lead"), ("agent", "Support agent"))
    key = service.enrol_totp("lead")
    page = chromium.new_context().new_page()

    # Someone behind the same address guesses passwords for both accounts.
    for username in ("lead", "agent"):
        for _ in range(3):
            page.goto(f"{service.url}/admin/login/")
            page.fill("#id_username", username)
            page.fill("#id_password", "guess")
            page.click("input[type=submit]")
        assert page.locator("#locked-out").count() == 1
    # The right password alone is refused for both (django-axes' lockout)...
    assert log_in(page, service.url, "agent").status == 429
    assert log_in(page, service.url, "lead", code="").status == 429
    # A valid code with a wrong password does not get through the lock...
    other = chromium.new_context().new_page()
    other.goto(f"{service.url}/admin/login/")
    other.fill("#id_username", "lead")
    other.fill("#id_password", "guess")
    other.fill("#id_otp_token", current_code(key))
    with other.expect_navigation() as navigation:
        other.click("input[type=submit]")
    assert navigation.value.status == 429
    # ...but the password with a valid code logs the lead in at once.
    answer = log_in(page, service.url, "lead", code=current_code(key))
    assert answer.status == 200 and page.url == f"{service.url}/dashboard/"
    # The agent, who has no second factor, stays locked out.
    assert log_in(chromium.new_context().new_page(), service.url, "agent").status == 429


def test_enrol_totp_prints_an_otpauth_url(staff_service) -> None:
    service = staff_service()
    service.add_staff("lead", "Support lead")
    url = service.shell("from django.core.management import call_command; call_command('enrol_totp', 'lead')")
    assert url.startswith("otpauth://totp/StreamLimit%3Alead?secret=") and "issuer=StreamLimit" in url
    # Enrolling again (a lost phone) replaces the device: one per account.
    service.shell("from django.core.management import call_command; call_command('enrol_totp', 'lead')")
    count = (
        "from django_otp.plugins.otp_totp.models import TOTPDevice as T\n"
        "print(T.objects.filter(user__username='lead').count())"
    )
    assert service.shell(count) == "1"
