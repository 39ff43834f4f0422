"""Policy commands: validate, render, push, import, crd, and `filter path`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tokenlimit import loader
from tokenlimit.cli._common import (
    ListenAddress,
    PolicyInvalid,
    Sha256,
    TokenlimitError,
    UpstreamUrl,
    check_gateway,
    load_policy,
    module_file,
)

if TYPE_CHECKING:
    from tokenlimit.model import FilterConfig

RENDER_UPSTREAM_DEFAULT = "https://api.openai.com"


@click.group("filter")
def filter_group() -> None:
    """The proxy-wasm filter module shipped in this package."""


@filter_group.command("path")
@click.option(
    "--target",
    type=click.Choice(["envoy", "higress"]),
    default="envoy",
    show_default=True,
    help="envoy: stock Envoy/Istio/Envoy Gateway; higress: Higress (its Redis ABI).",
)
def filter_path_command(target: str) -> None:
    """Print the path of the built .wasm module."""
    click.echo(module_file(target))


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse fields a Higress config holds that Higress and the filter ignore "
    "(unknown fields, overridden limit_by_* fields, a broken top-level rule beside _rules_).",
)
def validate(files: tuple[str, ...], strict: bool) -> None:
    """Check policy files (Higress config or TokenRateLimitPolicy, YAML or JSON).

    Runs the same loader as `render`, `up`, `push` and the operator. What a Higress config
    holds that Higress ignores (and so does the filter) is listed as warnings on stderr.
    """
    failures: list[str] = []
    for file in files:
        try:
            policy = loader.load_policy(file, strict=strict)
        except loader.PolicyError as exc:
            failures.append(str(exc))
            continue
        for warning in policy.warnings:
            click.echo(f"{file}: warning: {warning}", err=True)
        for unpriced in _unpriced_models(policy.config):
            click.echo(f"{file}: warning: {unpriced}", err=True)
        click.echo(f"{file}: ok ({loader.summary(policy)})")
    if failures:
        raise PolicyInvalid("\n".join(failures))


def _unpriced_models(config: FilterConfig) -> list[str]:
    """Rules whose cost limits refuse a request for a model no price matches: legal (silently
    free would escape every cost budget), but worth saying before a gateway refuses traffic."""
    from tokenlimit.model.policy import cost_limited

    rules = [config, *(config.rules or [])]
    return [
        f'rule {rule.rule_name} has cost limits but no "*" price: a request for a model '
        'no prices entry matches is refused (add a "*" entry to price every other model)'
        for rule in rules
        if rule.rule_name is not None and cost_limited(rule) and "*" not in (rule.prices or {})
    ]


def _module_options(func: Any) -> Any:
    """Options of the Kubernetes renderers (render and push --rendered)."""
    options = [
        click.option(
            "--wasm-url",
            default=None,
            metavar="URL",
            help="Where gateways fetch the filter module: oci://... or https://... "
            "(higress: tokenlimit-higress.wasm; istio: tokenlimit.wasm).",
        ),
        click.option("--sha256", type=Sha256(), default=None, help="sha256 of that module."),
        click.option(
            "--redis-password-file",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="higress: the value of spec.redis.passwordSecretRef (render only; push and "
            "the operator read the Secret).",
        ),
        click.option(
            "--higress-namespace",
            default="higress-system",
            show_default=True,
            help="higress: the namespace Higress reads WasmPlugins from.",
        ),
        click.option(
            "--fail-strategy",
            type=click.Choice(["FAIL_OPEN", "FAIL_CLOSE"]),
            default=None,
            help="WasmPlugin failStrategy [default: FAIL_CLOSE if failureMode is closed, "
            "else FAIL_OPEN].",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command()
@click.option(
    "--target",
    type=click.Choice(["envoy", "higress", "istio"]),
    default="envoy",
    show_default=True,
    help="envoy: bootstrap (+ ECDS file); higress / istio: Kubernetes objects (YAML stream).",
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--listen",
    type=ListenAddress(),
    default="10000",
    show_default=True,
    help="envoy: where Envoy listens: PORT or HOST:PORT.",
)
@click.option("--admin-port", type=click.IntRange(1, 65535), default=9901, show_default=True)
@click.option(
    "--upstream",
    type=UpstreamUrl(allow_mock=False),
    default=None,
    help=f"envoy: the LLM API: http(s)://host[:port] [default: {RENDER_UPSTREAM_DEFAULT}; a "
    "policy with spec.fallback routes to its fallback chains instead].",
)
@click.option(
    "--wasm",
    "wasm_path",
    default=None,
    metavar="PATH",
    help="envoy: the filter module's path as Envoy will see it [default: the packaged module].",
)
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="envoy: write envoy.yaml + tokenlimit-ecds.yaml (rules reload without restart) here.",
)
@_module_options
def render(
    target: str,
    file: str,
    listen: tuple[str, int],
    admin_port: int,
    upstream: str | None,
    wasm_path: str | None,
    out_dir: str | None,
    wasm_url: str | None,
    sha256: str | None,
    redis_password_file: str | None,
    higress_namespace: str,
    fail_strategy: str | None,
) -> None:
    """Print FILE's policy as gateway config.

    envoy: an Envoy bootstrap running the filter (filter config inline); with --out-dir, a
    bootstrap that reads the filter config from an ECDS file instead, so `tokenlimit push`
    (or any atomic rename) updates the rules live. higress / istio: the WasmPlugin (and, for
    Istio, what the bridge needs) for `kubectl apply -f -`.

    A policy with spec.fallback renders its fallback chains too: for envoy the chains'
    clusters and routes (with --out-dir, the route table in rds/ and the toggles' state file
    `tokenlimit fallback enable|disable` changes), for higress the fallback routes in the
    limiter's matchRules and the redirect EnvoyFilters. A target that cannot carry it
    (istio) refuses the policy.
    """
    policy = load_policy(file)
    if target != "envoy":
        objects = _render_kube(
            policy,
            target,
            wasm_url=wasm_url,
            sha256=sha256,
            higress_namespace=higress_namespace,
            fail_strategy=fail_strategy,
            secrets=_password_file_secrets(redis_password_file),
        )
        from tokenlimit.render.kube import to_yaml_documents

        click.echo(to_yaml_documents(objects), nl=False)
        return
    from tokenlimit.cli._envoy_files import write_envoy_files
    from tokenlimit.render import EnvoyTarget, RenderError, Upstream, render

    check_gateway(policy, "envoy")
    wasm = wasm_path or str(module_file("envoy"))
    host, port = listen
    # A policy with spec.fallback routes to its chains, not to --upstream.
    has_fallback = policy.policy is not None and policy.policy.spec.fallback is not None
    if has_fallback and upstream is not None:
        raise click.UsageError(
            "--upstream: the policy's spec.fallback names the upstreams (its routes' primary "
            "and fallbacks); leave --upstream out"
        )
    target_upstream = None if has_fallback else Upstream.parse(upstream or RENDER_UPSTREAM_DEFAULT)
    try:
        if out_dir is None:
            options = EnvoyTarget(
                wasm_path=wasm,
                upstream=target_upstream,
                listen_address=host,
                listen_port=port,
                admin_port=admin_port,
            )
            click.echo(render(policy, "envoy", options).text("bootstrap"), nl=False)
            return
        written = write_envoy_files(
            policy,
            Path(out_dir),
            wasm_path=wasm,
            upstream=target_upstream,
            listen_address=host,
            listen_port=port,
            admin_port=admin_port,
        )
    except RenderError as exc:
        raise PolicyInvalid(f"{policy.origin}: {exc}") from None
    for path in written:
        click.echo(path)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--target",
    type=click.Choice(["envoy", "kube"]),
    required=True,
    help="envoy: a standalone Envoy's ECDS file; kube: the cluster (server-side apply).",
)
@click.option(
    "--ecds",
    "ecds_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="envoy: the ECDS file Envoy watches (from `tokenlimit render --out-dir`).",
)
@click.option(
    "--wasm",
    "wasm_path",
    default=None,
    metavar="PATH",
    help="envoy: the module path Envoy loads [default: the one the ECDS file names].",
)
@click.option("--context", default=None, help="kube: the kubeconfig context.")
@click.option(
    "--namespace",
    "-n",
    default=None,
    help="kube: namespace [default: the document's, else default].",
)
@click.option(
    "--rendered",
    type=click.Choice(["higress", "istio"]),
    default=None,
    help="kube: apply the rendered gateway objects instead of the TokenRateLimitPolicy.",
)
@click.option(
    "--force-conflicts", is_flag=True, help="kube: take over fields another manager owns."
)
@click.option("--dry-run", is_flag=True, help="Show the diff; change nothing.")
@_module_options
def push(
    file: str,
    target: str,
    ecds_path: str | None,
    wasm_path: str | None,
    context: str | None,
    namespace: str | None,
    rendered: str | None,
    force_conflicts: bool,
    dry_run: bool,
    wasm_url: str | None,
    sha256: str | None,
    redis_password_file: str | None,
    higress_namespace: str,
    fail_strategy: str | None,
) -> None:
    """Validate FILE and push it to a running gateway.

    An invalid FILE never reaches the gateway (exit 1, nothing written). envoy: the ECDS file
    is replaced atomically and Envoy applies the rules without a restart. kube: server-side
    apply (field manager `tokenlimit`) of the policy, or with --rendered of its gateway
    objects; each object is reported as created, configured or unchanged.
    """
    kube_only = {"--context": context, "--namespace": namespace, "--rendered": rendered}
    if target == "envoy":
        if ecds_path is None:
            raise click.UsageError("--target envoy needs --ecds PATH (the file Envoy watches)")
        given = [name for name, value in kube_only.items() if value is not None]
        if given or force_conflicts:
            raise click.UsageError(f"{(given or ['--force-conflicts'])[0]} is for --target kube")
        _push_envoy(load_policy(file), Path(ecds_path), wasm_path, dry_run)
        return
    if ecds_path is not None or wasm_path is not None:
        raise click.UsageError("--ecds and --wasm are for --target envoy")
    if redis_password_file is not None:
        raise click.UsageError(
            "--redis-password-file is for render; push reads spec.redis.passwordSecretRef "
            "from the cluster"
        )
    policy = load_policy(file)
    _push_kube(
        policy,
        context=context,
        namespace=namespace,
        rendered=rendered,
        force=force_conflicts,
        dry_run=dry_run,
        render_options={
            "wasm_url": wasm_url,
            "sha256": sha256,
            "higress_namespace": higress_namespace,
            "fail_strategy": fail_strategy,
        },
    )


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--namespace", "-n", default=None, help="Namespace of the policies written.")
@click.option("--name", default=None, help="Name for the policies of a bare config.")
def import_command(file: str, namespace: str | None, name: str | None) -> None:
    """Convert a Higress ai-token-ratelimit WasmPlugin (or bare config) into policies.

    Prints TokenRateLimitPolicy documents (and a Secret for an inline Redis password) as a
    YAML stream; notes on what changed go to stderr. Every policy is validated first.
    """
    from tokenlimit.importer import ImportFailed, import_documents
    from tokenlimit.render.kube import load_yaml_documents, to_yaml_documents

    try:
        documents = load_yaml_documents(Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyInvalid(f"{file}: cannot read: {exc}") from None
    except Exception as exc:  # yaml.YAMLError: a parse error names line and column
        raise PolicyInvalid(f"{file}: not valid YAML: {exc}") from None
    try:
        result = import_documents(documents, file, namespace=namespace, name=name)
    except ImportFailed as exc:
        raise PolicyInvalid(str(exc)) from None
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(to_yaml_documents(result.documents), nl=False)


@click.command()
def crd() -> None:
    """Print the TokenRateLimitPolicy CustomResourceDefinition (generated from the model)."""
    from tokenlimit.crd import generate
    from tokenlimit.render.yaml import to_yaml

    click.echo(to_yaml(generate()), nl=False)


def _password_file_secrets(path: str | None) -> Any:
    if path is None:
        return None

    def read(namespace: str | None, ref: Any) -> str:
        return Path(path).read_text(encoding="utf-8").rstrip("\n")

    return read


def _render_kube(
    policy: loader.LoadedPolicy,
    target: str,
    *,
    wasm_url: str | None,
    sha256: str | None,
    higress_namespace: str,
    fail_strategy: str | None,
    secrets: Any,
) -> list[dict[str, Any]]:
    """The policy as Higress or Istio objects (fallback included); usage and render errors as
    CLI errors."""
    from tokenlimit.render import HigressOptions, IstioOptions, RenderError, WasmModule, render

    if policy.policy is None:
        raise PolicyInvalid(
            f"{policy.origin}: a bare Higress config says nothing about where it attaches: "
            f"convert it with `tokenlimit import {policy.origin}` and render the policy"
        )
    if wasm_url is None:
        module = "tokenlimit-higress.wasm" if target == "higress" else "tokenlimit.wasm"
        raise click.UsageError(
            f"--target {target} needs --wasm-url URL: where gateways fetch {module} "
            "(oci://REGISTRY/IMAGE:TAG or https://HOST/PATH); `tokenlimit filter path "
            f"--target {'higress' if target == 'higress' else 'envoy'}` is the file to publish"
        )
    try:
        module_ref = WasmModule(wasm_url, sha256)
        options: HigressOptions | IstioOptions = IstioOptions(
            module=module_ref, fail_strategy=fail_strategy
        )
        if target == "higress":
            options = HigressOptions(
                module=module_ref, namespace=higress_namespace, fail_strategy=fail_strategy
            )
        return list(render(policy, target, options, secrets=secrets).objects)
    except RenderError as exc:
        raise PolicyInvalid(f"{policy.origin}: {exc}") from None


def _push_envoy(
    policy: loader.LoadedPolicy, ecds_path: Path, wasm: str | None, dry_run: bool
) -> None:
    from tokenlimit.push import PushError, ecds_change, write_atomic

    check_gateway(policy, "envoy")
    try:
        change = ecds_change(policy.config, ecds_path, wasm)
        if dry_run:
            click.echo(change.diff() or f"{ecds_path}: no changes", nl=not change.changed)
            return
        if not change.changed:
            click.echo(f"{ecds_path}: unchanged ({loader.summary(policy)})")
            return
        write_atomic(ecds_path, change.after)
    except (PushError, OSError) as exc:
        raise TokenlimitError(str(exc)) from None
    created = "created" if change.before is None else "configured"
    click.echo(f"{ecds_path}: {created} ({loader.summary(policy)})")


def _push_kube(
    policy: loader.LoadedPolicy,
    *,
    context: str | None,
    namespace: str | None,
    rendered: str | None,
    force: bool,
    dry_run: bool,
    render_options: dict[str, Any],
) -> None:
    from tokenlimit import push as pushing

    if policy.policy is None:
        raise PolicyInvalid(
            f"{policy.origin}: --target kube applies TokenRateLimitPolicy documents: convert "
            f"this Higress config with `tokenlimit import {policy.origin}`"
        )
    document = _namespaced_document(policy, namespace)
    try:
        api = pushing.connect(context)
        if rendered is None:
            objects = [document]
        else:
            placed = loader.policy_from_data(document, policy.origin)
            objects = _render_kube(
                placed, rendered, secrets=pushing.secrets_from(api), **render_options
            )
        results = pushing.apply_objects(api, objects, dry_run=dry_run, force=force)
    except pushing.PushError as exc:
        raise TokenlimitError(str(exc)) from None
    for result in results:
        if dry_run and result.diff:
            click.echo(result.diff, nl=False)
        click.echo(result.line(dry_run))


def _namespaced_document(policy: loader.LoadedPolicy, namespace: str | None) -> dict[str, Any]:
    """The policy as the user wrote it, in the namespace it goes to (status left out)."""
    assert policy.policy is not None and policy.document is not None
    document = copy.deepcopy(dict(policy.document))
    document.pop("status", None)
    own = policy.policy.metadata.namespace
    if namespace is not None and own is not None and namespace != own:
        raise click.UsageError(
            f"the namespace from the document ({own}) does not match --namespace {namespace}"
        )
    document["metadata"]["namespace"] = namespace or own or "default"
    return document
