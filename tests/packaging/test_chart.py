"""The Helm chart (charts/gputopo): it lints, renders the parts its values ask for, and refuses
bad values with a message naming them (values.schema.json)."""

from __future__ import annotations

import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from gputopo.scheduler.cli import build_parser
from tests.packaging import helm
from tests.packaging.helm import CHART, REPO, find, template

NRT_CRD = "noderesourcetopologies.topology.node.k8s.io"
PODGROUP_CRD = "podgroups.scheduling.x-k8s.io"
ALL_ON = {"scheduler": {"enabled": True}, "extender": {"enabled": True}}


def _names(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(o["kind"], o["metadata"]["name"]) for o in objects}


def _agent_args(objects: list[dict[str, Any]]) -> list[str]:
    (container,) = find(objects, "DaemonSet", "gputopo-agent")["spec"]["template"]["spec"][
        "containers"
    ]
    return list(container["args"])


def test_chart_metadata_follows_the_project() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "gputopo"
    assert chart["appVersion"] == project["version"]
    assert chart["kubeVersion"] == ">=1.34.0-0"


def test_older_kubernetes_is_refused_by_kube_version() -> None:
    args = ("template", helm.RELEASE, str(CHART), "--kube-version")
    refused = helm.run(*args, "v1.33.4")
    assert refused.returncode != 0
    assert "chart requires kubeVersion: >=1.34.0-0" in refused.stderr
    assert helm.run(*args, "v1.34.0").returncode == 0


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize(
    "values",
    [
        {},
        ALL_ON,
        {"agent": {"migMonitor": True, "podResources": {"runAsRoot": True}}},
        {"rebalance": {"enabled": True, "dryRun": False, "namespaces": ["batch"]}},
    ],
    ids=["defaults", "scheduler-and-extender", "mig-monitor-and-root", "rebalance-acting"],
)
def test_helm_lint_passes(strict: bool, values: dict[str, Any]) -> None:
    result = helm.run("lint", str(CHART), *(["--strict"] if strict else []), values=values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_packaged_chart_carries_the_manifests_and_renders_the_same(tmp_path: Path) -> None:
    """charts/gputopo/manifests links to daemonset/: `helm package` must carry those files, so a
    chart installed from its archive (a chart repository) renders what the directory renders."""
    result = helm.run("package", str(CHART), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (archive,) = tmp_path.glob("gputopo-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert "gputopo/manifests/admission/agent-node-policy.yaml" in names
    for values in ({}, ALL_ON):
        from_archive = helm.run(
            "template", helm.RELEASE, str(archive), "--namespace", helm.NAMESPACE, values=values
        )
        assert from_archive.returncode == 0, from_archive.stderr
        rendered = list(yaml.safe_load_all(from_archive.stdout))
        assert rendered == list(yaml.safe_load_all(helm.template_text(values)))


def test_defaults_render_the_agent_only() -> None:
    objects = template()
    names = _names(objects)
    # nothing of the scheduler's or the extender's
    assert all(name.startswith("gputopo-agent") or name == NRT_CRD for _, name in names)
    assert names >= {
        ("ServiceAccount", "gputopo-agent"),
        ("ClusterRole", "gputopo-agent"),
        ("ClusterRoleBinding", "gputopo-agent"),
        ("ValidatingAdmissionPolicy", "gputopo-agent-node-writes"),
        ("ValidatingAdmissionPolicyBinding", "gputopo-agent-node-writes"),
        ("ValidatingAdmissionPolicy", "gputopo-agent-nrt-writes"),
        ("ValidatingAdmissionPolicyBinding", "gputopo-agent-nrt-writes"),
        ("CustomResourceDefinition", NRT_CRD),
        ("DaemonSet", "gputopo-agent"),
        ("Service", "gputopo-agent-metrics"),
    }
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == helm.RELEASE
    args = _agent_args(objects)
    assert "--publish-nrt" in args
    assert {"--mig-strategy=none", "--sla-taint-effect=PreferNoSchedule"} <= set(args)
    assert "--health-taint-effect=NoSchedule" in args
    (container,) = find(objects, "DaemonSet", "gputopo-agent")["spec"]["template"]["spec"][
        "containers"
    ]
    assert container["image"] == "gputopo-agent:0.1.0"  # the tag defaults to appVersion


def test_scheduler_and_extender_render_with_the_podgroup_crd() -> None:
    names = _names(template(ALL_ON))
    assert {
        ("CustomResourceDefinition", PODGROUP_CRD),
        ("ServiceAccount", "gputopo-scheduler"),
        ("ClusterRole", "gputopo-scheduler"),
        ("Role", "gputopo-scheduler-leader-election"),
        ("ConfigMap", "gputopo-scheduler-profile"),
        ("Deployment", "gputopo-scheduler"),
        ("Service", "gputopo-scheduler-metrics"),
        ("Deployment", "gputopo-extender"),
        ("Service", "gputopo-extender"),
        ("ClusterRole", "gputopo-extender"),
        ("NetworkPolicy", "gputopo-extender"),
    } <= names


def _image(objects: list[dict[str, Any]], kind: str, name: str) -> str:
    (container,) = find(objects, kind, name)["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def test_scheduler_and_extender_take_the_scheduler_image_else_the_agents() -> None:
    default = template(ALL_ON)
    assert _image(default, "DaemonSet", "gputopo-agent") == "gputopo-agent:0.1.0"
    assert _image(default, "Deployment", "gputopo-scheduler") == "gputopo-scheduler:0.1.0"
    assert _image(default, "Deployment", "gputopo-extender") == "gputopo-scheduler:0.1.0"
    same = template(
        {
            **ALL_ON,
            "image": {"repository": "registry.example/gputopo", "tag": "1.2"},
            "schedulerImage": {"repository": ""},
        }
    )
    assert _image(same, "Deployment", "gputopo-scheduler") == "registry.example/gputopo:1.2"
    split = template({**ALL_ON, "schedulerImage": {"repository": "registry.example/sched"}})
    assert _image(split, "DaemonSet", "gputopo-agent") == "gputopo-agent:0.1.0"
    assert _image(split, "Deployment", "gputopo-scheduler") == "registry.example/sched:0.1.0"
    assert _image(split, "Deployment", "gputopo-extender") == "registry.example/sched:0.1.0"


def test_podgroup_crd_comes_only_with_the_scheduler() -> None:
    crds = {name for kind, name in _names(template({"extender": {"enabled": True}}))}
    assert PODGROUP_CRD not in crds
    without = _names(template({"scheduler": {"enabled": True, "installPodGroupCRD": False}}))
    assert ("CustomResourceDefinition", PODGROUP_CRD) not in without
    assert ("Deployment", "gputopo-scheduler") in without


def test_values_reach_the_agent() -> None:
    objects = template(
        {
            "image": {"repository": "registry.example/gputopo-agent", "tag": "0.1.0-slim"},
            "imagePullSecrets": [{"name": "pull"}],
            "migStrategy": "mixed",
            "sla": {"taintEffect": "NoSchedule"},
            "health": {"taintEffect": "NoExecute"},
            "agent": {
                "nodeSelector": {"gpu": "yes"},
                "priorityClassName": "gpu-critical",
                "runtimeClassName": "nvidia",
                "interval": 30,
                "extraArgs": ["--log-level=debug"],
                "podResources": {"socket": "/run/kubelet/pod-resources/kubelet.sock"},
            },
        }
    )
    pod = find(objects, "DaemonSet", "gputopo-agent")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/gputopo-agent:0.1.0-slim"
    assert pod["imagePullSecrets"] == [{"name": "pull"}]
    assert pod["nodeSelector"] == {"gpu": "yes"}
    assert pod["priorityClassName"] == "gpu-critical"
    assert pod["runtimeClassName"] == "nvidia"
    assert {
        "--mig-strategy=mixed",
        "--sla-taint-effect=NoSchedule",
        "--health-taint-effect=NoExecute",
        "--interval=30",
        "--log-level=debug",
        "--pod-resources-socket=/run/kubelet/pod-resources/kubelet.sock",
    } <= set(container["args"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["pod-resources"]["hostPath"]["path"] == "/run/kubelet/pod-resources"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["pod-resources"] == "/run/kubelet/pod-resources"


def test_coexistence_and_device_taint_values_reach_the_agents_flags() -> None:
    default = find(template({}), "DaemonSet", "gputopo-agent")
    (container,) = default["spec"]["template"]["spec"]["containers"]
    assert {"--nvidia-labels=defer", "--driver-upgrade-poll-interval=10"} <= set(container["args"])
    assert not any(arg.startswith("--publish-device-taints") for arg in container["args"])
    objects = template(
        {
            "nvidiaLabels": "own",
            "agent": {"driverUpgradePollInterval": 0},
            "health": {
                "deviceTaints": {
                    "enabled": True,
                    "driver": "gpu.example.com",
                    "effects": {
                        "degraded": "None",
                        "failed": "NoExecute",
                        "resetRequired": "NoExecute",
                    },
                }
            },
        }
    )
    (container,) = find(objects, "DaemonSet", "gputopo-agent")["spec"]["template"]["spec"][
        "containers"
    ]
    assert {
        "--nvidia-labels=own",
        "--driver-upgrade-poll-interval=0",
        "--publish-device-taints",
        "--dra-driver=gpu.example.com",
        "--device-taint-effect-degraded=None",
        "--device-taint-effect-failed=NoExecute",
        "--device-taint-effect-reset-required=NoExecute",
    } <= set(container["args"])


def test_an_empty_pod_resources_socket_mounts_nothing() -> None:
    objects = template({"agent": {"podResources": {"socket": ""}}})
    pod = find(objects, "DaemonSet", "gputopo-agent")["spec"]["template"]["spec"]
    assert "pod-resources" not in {v["name"] for v in pod["volumes"]}
    assert "--pod-resources-socket=" in _agent_args(objects)


def test_nrt_off_drops_the_flag_the_grant_the_policy_and_the_crd() -> None:
    objects = template({"nodeResourceTopology": {"enabled": False, "installCRD": False}})
    assert "--publish-nrt" not in _agent_args(objects)
    names = _names(objects)
    assert ("ValidatingAdmissionPolicy", "gputopo-agent-nrt-writes") not in names
    assert ("CustomResourceDefinition", NRT_CRD) not in names
    rules = find(objects, "ClusterRole", "gputopo-agent")["rules"]
    assert [rule for rule in rules if "topology.node.k8s.io" in rule["apiGroups"]] == []
    assert {"resources": ["nodes"], "verbs": ["get", "patch"]}.items() <= rules[0].items()


def test_admission_policy_names_the_release_namespaces_agent() -> None:
    objects = template(namespace="gpu-agents")
    for name in ("gputopo-agent-node-writes", "gputopo-agent-nrt-writes"):
        (condition,) = find(objects, "ValidatingAdmissionPolicy", name)["spec"]["matchConditions"]
        assert "'system:serviceaccount:gpu-agents:gputopo-agent'" in condition["expression"]
    binding = find(objects, "ClusterRoleBinding", "gputopo-agent")
    assert binding["subjects"][0]["namespace"] == "gpu-agents"
    assert _names(template({"admissionPolicy": {"enabled": False}})).isdisjoint(
        {("ValidatingAdmissionPolicy", "gputopo-agent-node-writes")}
    )


def test_extender_network_policy_admits_host_network_schedulers() -> None:
    objects = template(
        {
            "extender": {
                "enabled": True,
                "networkPolicy": {"enabled": True, "schedulerCIDRs": ["10.0.0.10/32"]},
                "tls": {"secretName": "my-extender-tls", "clientName": "kube-scheduler"},
            }
        }
    )
    policy = find(objects, "NetworkPolicy", "gputopo-extender")
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "10.0.0.10/32"}} in sources
    pod = find(objects, "Deployment", "gputopo-extender")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "my-extender-tls"
    off = template({"extender": {"enabled": True, "networkPolicy": {"enabled": False}}})
    assert ("NetworkPolicy", "gputopo-extender") not in _names(off)


def _rebalance_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = find(objects, "Deployment", "gputopo-rebalance")["spec"]["template"]["spec"][
        "containers"
    ]
    return dict(container)


def test_rebalance_controller_renders_only_when_enabled_and_in_dry_run() -> None:
    assert not any("rebalance" in name for _, name in _names(template(ALL_ON)))
    objects = template({"rebalance": {"enabled": True}})
    assert {
        ("ServiceAccount", "gputopo-rebalance"),
        ("ClusterRole", "gputopo-rebalance"),
        ("ClusterRoleBinding", "gputopo-rebalance"),
        ("Role", "gputopo-rebalance-leader-election"),
        ("RoleBinding", "gputopo-rebalance-leader-election"),
        ("Deployment", "gputopo-rebalance"),
    } <= _names(objects)
    container = _rebalance_container(objects)
    assert container["command"] == ["gputopo-scheduler", "rebalance"]
    assert "args" not in container  # every namespace and priority class may be moved
    assert container["image"] == "gputopo-scheduler:0.1.0"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GPUTOPO_DRY_RUN"] == "true"
    assert env["GPUTOPO_SCHEDULER_NAME"] == "gputopo-scheduler"


def test_rebalance_values_reach_the_controllers_flags() -> None:
    objects = template(
        {
            "scheduler": {"enabled": True, "schedulerName": "gpu-scheduler"},
            "rebalance": {
                "enabled": True,
                "replicas": 1,
                "dryRun": False,
                "wait": 300,
                "interval": "10s",
                "evictionsPerMinute": 0.5,
                "nodeCooldown": "1h",
                "cooldown": "0",
                "minGpus": 4,
                "namespaces": ["batch", "etl"],
                "priorityClasses": ["low-priority"],
                "extraEnv": [{"name": "GPUTOPO_MAX_EVICTIONS", "value": "3"}],
            },
        }
    )
    assert find(objects, "Deployment", "gputopo-rebalance")["spec"]["replicas"] == 1
    container = _rebalance_container(objects)
    assert container["args"] == [
        "--namespace=batch",
        "--namespace=etl",
        "--priority-class=low-priority",
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert {
        "GPUTOPO_DRY_RUN": "false",
        "GPUTOPO_WAIT": "300",
        "GPUTOPO_INTERVAL": "10s",
        "GPUTOPO_EVICTIONS_PER_MINUTE": "0.5",
        "GPUTOPO_NODE_COOLDOWN": "1h",
        "GPUTOPO_COOLDOWN": "0",
        "GPUTOPO_MIN_GPUS": "4",
        "GPUTOPO_SCHEDULER_NAME": "gpu-scheduler",
        "GPUTOPO_MAX_EVICTIONS": "3",
    }.items() <= env.items()


def test_rebalance_values_are_what_the_controllers_command_line_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Deployment's env twins and args, read by `gputopo-scheduler rebalance`'s own parser."""
    container = _rebalance_container(
        template({"rebalance": {"enabled": True, "namespaces": ["batch"], "wait": "90s"}})
    )
    for env in container["env"]:
        monkeypatch.setenv(env["name"], env.get("value", "from-the-downward-api"))
    args = build_parser().parse_args(["rebalance", *container["args"]])
    assert (args.dry_run, args.wait, args.interval, args.min_gpus) == (True, 90.0, 30.0, 2)
    assert (args.evictions_per_minute, args.node_cooldown, args.cooldown) == (4.0, 600.0, 60.0)
    assert args.namespace == ["batch"]
    assert (args.scheduler_name, args.lease_name) == ("gputopo-scheduler", "gputopo-rebalance")


def test_scheduler_profile_value_reaches_its_configmap() -> None:
    profile = (
        "apiVersion: gputopo.io/v1alpha1\nkind: SchedulerProfile\nscores:\n  NodeAffinity: 5\n"
    )
    objects = template({"scheduler": {"enabled": True, "profile": profile}})
    assert find(objects, "ConfigMap", "gputopo-scheduler-profile")["data"] == {
        "profile.yaml": profile
    }


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"migStrategy": "sometimes"}, "migStrategy"),
        ({"nvidiaLabels": "mine"}, "nvidiaLabels"),
        ({"agent": {"driverUpgradePollInterval": -1}}, "agent/driverUpgradePollInterval"),
        (
            {"health": {"deviceTaints": {"enabled": True, "effects": {"failed": "Evict"}}}},
            "health/deviceTaints",
        ),
        ({"sla": {"taintEffect": "Evict"}}, "sla/taintEffect"),
        ({"health": {"taintEffect": "noschedule"}}, "health/taintEffect"),
        ({"image": {"pullPolicy": "Maybe"}}, "image/pullPolicy"),
        ({"image": {"repository": ""}}, "image/repository"),
        ({"schedulerImage": {"tag": "a b"}}, "schedulerImage/tag"),
        ({"agent": {"podResources": {"socket": "kubelet.sock"}}}, "agent/podResources/socket"),
        ({"agent": {"interval": 0}}, "agent/interval"),
        ({"agent": {"extraArgs": ["log-level=debug"]}}, "agent/extraArgs/0"),
        ({"agent": {"migMonitor": "yes"}}, "agent/migMonitor"),
        ({"scheduler": {"replicas": 0}}, "scheduler/replicas"),
        ({"extender": {"networkPolicy": {"schedulerCIDRs": ["10.0.0.1"]}}}, "schedulerCIDRs/0"),
        ({"monitoring": {"prometheusRule": {"slaThreshold": 1001}}}, "slaThreshold"),
        ({"migstrategy": "mixed"}, "migstrategy"),  # a typo is not silently ignored
        ({"agent": {"tolerate": []}}, "tolerate"),
        ({"rebalance": {"wait": "5 minutes"}}, "rebalance/wait"),
        ({"rebalance": {"interval": "1d"}}, "rebalance/interval"),
        ({"rebalance": {"evictionsPerMinute": 0}}, "rebalance/evictionsPerMinute"),
        ({"rebalance": {"minGpus": 0}}, "rebalance/minGpus"),
        ({"rebalance": {"dryRun": "no"}}, "rebalance/dryRun"),
        ({"rebalance": {"namespaces": ["Batch"]}}, "rebalance/namespaces/0"),
        ({"rebalance": {"dryrun": False}}, "dryrun"),
    ],
)
def test_bad_values_are_refused_naming_them(values: dict[str, Any], named: str) -> None:
    for args in (("template", helm.RELEASE, str(CHART)), ("lint", str(CHART))):
        result = helm.run(*args, values=values)
        assert result.returncode != 0, f"helm {args[0]} accepted {values}"
        output = result.stdout + result.stderr
        assert "values don't meet the specifications of the schema" in output, output
        assert named in output, output
