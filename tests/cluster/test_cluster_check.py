"""`imgbot check` and `imgbot run` with backend ray, as an operator runs them: no cluster at
the address, a token the cluster refuses, and a cluster that is fine."""

from __future__ import annotations

import yaml

from tests.cli.test_cli import imgbot, write_config
from tests.cluster.raycluster import free_port


def cluster_line(output: str) -> str:
    """check's cluster line, its spaces made single."""
    (line,) = [
        " ".join(text.split())
        for text in output.splitlines()
        if text.split(":")[0].endswith(" cluster")
    ]
    return line


def ray_config(path, homeserver, model, state, address: str, token_file) -> str:
    write_config(path, homeserver, model, state)
    config = yaml.safe_load(path.read_text())
    config["generation"].update(
        backend="ray",
        ray={
            "address": address,
            "workers": 2,
            "token_file": str(token_file),
            "resources": {"imgbot_worker": 1},
        },
    )
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_without_a_cluster_check_fails_and_run_stops_saying_why(homeserver, test_model, tmp_path):
    token = tmp_path / "ray-token"
    token.write_text("some-token\n")
    token.chmod(0o600)
    address = f"127.0.0.1:{free_port()}"
    config = ray_config(
        tmp_path / "config.yaml", homeserver, test_model, tmp_path / "state", address, token
    )
    checked = imgbot("check", "-c", config, timeout=120)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    line = cluster_line(checked.stdout)
    assert line.startswith("FAIL cluster: generation.ray: nothing answers at " + address), line
    assert "is Ray running on the head node" in line
    ran = imgbot("run", "-c", config, timeout=120)
    assert ran.returncode == 1  # systemd tries again: the cluster may come up
    assert f"generation.ray: nothing answers at {address}" in ran.stderr, ran.stderr[-2000:]


def test_a_wrong_token_is_refused_and_the_right_one_is_checked(
    ray_cluster, homeserver, test_model, tmp_path
):
    ray_cluster.start_head()
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-cluster-token\n")
    wrong.chmod(0o600)
    config = ray_config(
        tmp_path / "wrong.yaml",
        homeserver,
        test_model,
        tmp_path / "state",
        ray_cluster.address,
        wrong,
    )
    checked = imgbot("check", "-c", config, timeout=180)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    line = cluster_line(checked.stdout)
    assert line.startswith("FAIL cluster: generation.ray: no Ray cluster answered at"), line
    assert "refused the token of generation.ray.token_file" in line, line

    config = ray_config(
        tmp_path / "right.yaml",
        homeserver,
        test_model,
        tmp_path / "state",
        ray_cluster.address,
        ray_cluster.token_file,
    )
    checked = imgbot("check", "-c", config, timeout=180)
    line = cluster_line(checked.stdout)
    assert line.startswith(
        f"ok cluster: {ray_cluster.address}: 1 node(s), token authentication on, imgbot "
    ), line
    assert "0 worker(s) running" in line and "room for 1 more worker(s)" in line, line


def test_a_cluster_without_token_authentication_is_refused_unless_allowed(
    tmp_path, homeserver, test_model
):
    from tests.cluster.raycluster import RayCluster

    open_cluster = RayCluster(tmp_path / "ray", token=None)
    try:
        open_cluster.start_head()
        token = tmp_path / "ray-token"
        token.write_text("a-token-this-cluster-does-not-ask-for\n")
        token.chmod(0o600)
        config = ray_config(
            tmp_path / "token.yaml",
            homeserver,
            test_model,
            tmp_path / "state",
            open_cluster.address,
            token,
        )
        line = cluster_line(imgbot("check", "-c", config, timeout=180).stdout)
        assert line.startswith("FAIL cluster: generation.ray: the Ray cluster at "), line
        assert "runs without token authentication" in line, line

        config = yaml.safe_load(open(config).read())
        config["generation"]["ray"].pop("token_file")
        config["generation"]["ray"]["allow_unauthenticated"] = True
        (tmp_path / "open.yaml").write_text(yaml.safe_dump(config))
        checked = imgbot("check", "-c", str(tmp_path / "open.yaml"), timeout=180)
        line = cluster_line(checked.stdout)
        assert line.startswith("ok cluster: ") and "WITHOUT token authentication" in line, line
        assert "allow_unauthenticated is true" in checked.stderr  # said at every start
    finally:
        open_cluster.stop()
