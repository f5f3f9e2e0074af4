#!/usr/bin/env bash
# Checks what packaging/ ships, with the real tools where this machine has them:
#   - the Prometheus alert rules (promtool check rules) and their unit tests (promtool test rules),
#     and both Prometheus configs (promtool check config);
#   - the Grafana dashboard: valid JSON, the datasource a variable, every PromQL expression
#     parsed by promtool (Grafana's variables filled in);
#   - every metric name the rules and the dashboard use is one docs/metrics.md lists;
#   - the systemd units (systemd-analyze verify on a scratch root), and jd-proxy.service and
#     jd-proxy@.service keeping the same [Service] settings;
#   - compose.yml (docker compose config, when docker compose is installed).
# promtool comes with Debian's `prometheus` package and jq with `jq` (scripts/setup.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."

P=packaging
fail() { echo "check-packaging: $*" >&2; exit 1; }
for tool in promtool jq; do
  command -v "$tool" >/dev/null || fail "$tool is missing (run scripts/setup.sh)"
done
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# --- Prometheus
promtool check rules "$P/prometheus/alerts.yml" >/dev/null
promtool test rules "$P/prometheus/alerts_test.yml"
for c in prometheus.yml prometheus-compose.yml; do
  promtool check config "$P/prometheus/$c" >/dev/null
done

# --- Grafana
dash="$P/grafana/jd-proxy.json"
jq -e '.uid and .title and (.panels | length > 0)' "$dash" >/dev/null || fail "$dash: not a dashboard"
jq -e '[.templating.list[] | select(.type == "datasource" and .query == "prometheus" and .name == "datasource")] | length == 1' \
  "$dash" >/dev/null || fail "$dash: no datasource variable"
# Every panel and query names the datasource through the variable, so an import asks for it.
bad_ds=$(jq -r '[.. | objects | select(has("datasource")) | .datasource
  | select(type == "object" and .type == "prometheus" and .uid != "${datasource}")] | length' "$dash")
[ "$bad_ds" = 0 ] || fail "$dash: $bad_ds datasource(s) not \${datasource}"
# Each expression as a recording rule, Grafana's variables filled in, for promtool to parse.
{
  echo "groups:"
  echo "  - name: dashboard"
  echo "    rules:"
  jq -r '.. | objects | (.expr? // empty), (.query?.query? // empty) | select(type == "string")' "$dash" |
    sed -E -e 's/\$__rate_interval/5m/g; s/\$__range/1d/g; s/\$topn/10/g; s/\$instance/.*/g' \
      -e 's/^label_values\((.*), *[a-z_]+\)$/\1/' |
    while IFS= read -r expr; do
      printf '      - record: dashboard:expr\n        expr: %s\n' "$(jq -Rn --arg e "$expr" '$e')"
    done
} > "$scratch/dashboard-rules.yml"
n_expr=$(grep -c 'record:' "$scratch/dashboard-rules.yml")
[ "$n_expr" -gt 20 ] || fail "$dash: only $n_expr expressions found"
out=$(promtool check rules "$scratch/dashboard-rules.yml" 2>&1) || fail "$dash: an expression does not parse: $out"

# --- Metric names against the documented ones
names=${METRICS_DOC:-docs/metrics.md}
[ -f "$names" ] || fail "$names is missing: it lists the metric names the rules and dashboard may use"
grep -oE '\b(jd_proxy|tp|process)_[a-z0-9_]+' "$names" | sort -u > "$scratch/known"
# The rules, their tests' series and the dashboard's queries (comments aside).
{ jq -r '.. | objects | (.expr? // empty), (.definition? // empty)' "$dash"
  grep -hv '^\s*#' "$P/prometheus/alerts.yml" "$P/prometheus/alerts_test.yml"
} > "$scratch/exprs"
missing=""
for m in $(grep -oE '\b(jd_proxy|tp|process)_[a-z0-9_]+' "$scratch/exprs" | sort -u); do
  base=$(sed -E 's/_(bucket|sum|count)$//' <<<"$m")
  grep -qx "$m" "$scratch/known" || grep -qx "$base" "$scratch/known" || missing+=" $m"
done
[ -z "$missing" ] || fail "metrics used but not in $names:$missing"

# --- Config keys named in the guide and the packaging exist (section.key: the key is in an
# example config, or a field of a config struct).
sections='node|coinbase|stratum|vardiff|solo|policy|template_provider|upstream|failover|upgrade|http|ledger|server'
{ grep -ohE "\`($sections)\.[a-z0-9_]+\`" docs/operating.md | tr -d '\`'
  grep -ohE "\b($sections)\.[a-z0-9_]+" "$P"/prometheus/alerts.yml "$P"/systemd/*.service \
    "$P"/compose/*.toml "$P"/Dockerfile "$P"/compose.yml | grep -vE '\.(rs|toml|yml|json|md|service|sh|sock)$'
} | sort -u > "$scratch/keys"
unknown=""
while IFS= read -r k; do
  key=${k#*.}
  grep -qE "^#? *$key *=" examples/*.toml ||
    grep -rqE "pub $key:" proxy/src template-provider/src || unknown+=" $k"
done < "$scratch/keys"
[ -z "$unknown" ] || fail "config keys named but not in examples/ or a config struct:$unknown"
n_keys=$(wc -l < "$scratch/keys")

# --- systemd
s="$P/systemd"
diff <(sed -n '/^\[Service\]/,$p' "$s/jd-proxy.service") <(sed -n '/^\[Service\]/,$p' "$s/jd-proxy@.service") ||
  fail "jd-proxy.service and jd-proxy@.service differ in [Service]/[Install]"
if command -v systemd-analyze >/dev/null; then
  # A scratch root: the units, stand-ins for the binaries they run, and the system's own units
  # they depend on; any line verify prints (an unknown key, a typo in a filter) is a failure.
  root="$scratch/root"
  mkdir -p "$root/usr/local/bin" "$root/bin" "$root/etc/systemd/system" "$root/lib/systemd"
  cp -r /lib/systemd/system "$root/lib/systemd/"
  for b in jd-proxy template-provider; do cp /bin/true "$root/usr/local/bin/$b"; done
  cp /bin/kill "$root/bin/kill"
  cp "$s"/*.service "$root/etc/systemd/system/"
  out=$(systemd-analyze verify --root="$root" jd-proxy.service jd-proxy@a.service template-provider.service 2>&1) ||
    fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify: $out"
else
  echo "check-packaging: systemd-analyze not installed; systemd units not verified"
fi

# --- compose
if docker compose version >/dev/null 2>&1; then
  PAYOUT_ADDRESS=bc1qexample docker compose -f "$P/compose.yml" config -q
else
  echo "check-packaging: docker compose not installed; packaging/compose.yml not validated"
fi
echo "packaging checks passed ($n_expr dashboard expressions, $n_keys config keys)"
