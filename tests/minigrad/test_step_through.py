"""The step-through page: its numbers are the engine's and torch's, sums where paths meet, and it
works in a real browser (headless Chromium driven by selenium)."""

import json
import os
import re
import shutil

import numpy as np
import pytest
import torch

import minigrad as mg
from minigrad.examples.rnn_cell import main as rnn_cell_main
from minigrad.examples.rnn_cell import rnn_cell


def embedded(path) -> dict:
    """The data block the page's script reads."""
    text = open(path).read()
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S)[1])


def shown(a: dict) -> np.ndarray:
    assert "values" in a, "a seed-example tensor was summarized; it should be shown whole"
    return np.array([float(v) for v in a["values"]], dtype=np.float32).reshape(a["shape"])


def seed_page(path):
    """The seed RNN cell's page, with its intermediate tensors named too (found in the graph)."""
    with mg.viz.record_backward() as record:
        values = rnn_cell(0)
    loss = values["loss"]
    next_h = loss.grad_fn.inputs[0]
    pre = next_h.grad_fn.inputs[0]
    h2h, i2h = pre.grad_fn.inputs
    names = {"W_h": values["W_h"], "W_x": values["W_x"], "h2h": h2h, "i2h": i2h, "pre": pre, "next_h": next_h}
    mg.viz.step_through(loss, path, names={**names, "loss": loss}, record=record)
    return values


def gradients_shown(data: dict) -> list[tuple[str, np.ndarray]]:
    """(label of the tensor, gradient) for every gradient the page shows: arriving, the pieces
    that are summed, what is sent to each input, and the leaves' .grad."""
    label = {k: t["label"] for k, t in data["tensors"].items()}
    found = []
    for step in data["backward"]:
        found.append((label[step["node"]], shown(step["grad"])))
        found += [(label[step["node"]], shown(p["grad"])) for p in step["pieces"]]
        found += [(label[s["to"]], shown(s["grad"])) for s in step["sent"] if "grad" in s]
    for leaf in data["leaves"]:
        found.append((label[leaf["tensor"]], shown(leaf["grad"])))
        found += [(label[leaf["tensor"]], shown(p["grad"])) for p in leaf["pieces"]]
    return found


def test_every_gradient_on_the_seed_page_is_torchs(tmp_path):
    values = seed_page(tmp_path / "rnn.html")
    data = embedded(tmp_path / "rnn.html")
    W_h = torch.tensor(values["W_h"].data, requires_grad=True)
    W_x = torch.tensor(values["W_x"].data, requires_grad=True)
    x, prev_h = torch.tensor(values["x"].data), torch.tensor(values["prev_h"].data)
    reference = {"W_h": W_h, "W_x": W_x, "h2h": torch.mm(W_h, prev_h.t()), "i2h": torch.mm(W_x, x.t())}
    reference["pre"] = reference["h2h"] + reference["i2h"]
    reference["next_h"] = reference["pre"].tanh()
    reference["loss"] = reference["next_h"].sum()
    for t in reference.values():
        t.retain_grad()
    reference["loss"].backward()

    found = gradients_shown(data)
    assert {name for name, _ in found} == set(reference)  # every tensor's gradient is on the page
    assert len(found) == 5 + 6 + 6 + 2  # arriving at 5 nodes, 6 pieces (one each), 6 sends, 2 leaves' .grad
    for name, grad in found:
        np.testing.assert_allclose(grad, reference[name].grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    # ... and the page's numbers are the engine's own, to the last bit
    last = {data["tensors"][leaf["tensor"]]["label"]: shown(leaf["grad"]) for leaf in data["leaves"]}
    assert np.array_equal(last["W_h"], values["W_h"].grad.data) and np.array_equal(last["W_x"], values["W_x"].grad.data)
    assert [f["op"] for f in data["forward"]] == ["Mm", "Mm", "Add", "Tanh", "Sum"]  # the order they ran
    ops = [next(f["op"] for f in data["forward"] if f["node"] == b["node"]) for b in data["backward"]]
    assert ops == ["Sum", "Tanh", "Add", "Mm", "Mm"]  # the engine's visiting order (as trace shows it)


def test_where_two_paths_meet_the_page_shows_the_pieces_and_their_sum(tmp_path):
    x = mg.tensor([0.5, -1.0, 2.0], requires_grad=True)
    h = x * 3
    mg.viz.step_through((h * h + h).sum(), tmp_path / "twice.html", names={"x": x, "h": h})
    data = embedded(tmp_path / "twice.html")
    (at_h,) = [b for b in data["backward"] if data["tensors"][b["node"]]["label"] == "h"]
    pieces = [shown(p["grad"]) for p in at_h["pieces"]]
    assert len(pieces) == 3  # h * h sends h two gradients, + h a third
    np.testing.assert_allclose(sum(pieces), shown(at_h["grad"]), rtol=1e-6)  # the engine's sum is shown
    np.testing.assert_allclose(shown(at_h["grad"]), 2 * h.data + 1, rtol=1e-6)

    y = mg.tensor([1.0, 2.0], requires_grad=True)
    y.grad = mg.tensor([10.0, 10.0])  # a gradient from an earlier backward
    mg.viz.step_through((y * y).sum(), tmp_path / "leaf.html")
    (leaf,) = embedded(tmp_path / "leaf.html")["leaves"]
    assert len(leaf["pieces"]) == 2 and shown(leaf["before"]).tolist() == [10.0, 10.0]
    assert shown(leaf["grad"]).tolist() == [12.0, 14.0] == y.grad.data.tolist()


def test_large_tensors_are_summarized_and_the_seed_page_is_small(tmp_path):
    w = mg.randn(30, 30, requires_grad=True)
    mg.viz.step_through((w * 2).sum(), tmp_path / "big.html")
    (value,) = [t["value"] for t in embedded(tmp_path / "big.html")["tensors"].values() if t["kind"] == "leaf"]
    assert "values" not in value and value["shape"] == [30, 30]
    assert value["summary"]["std"] == pytest.approx(float(w.data.std()), rel=1e-5)
    v = mg.tensor([1.0, float("inf"), float("nan")], requires_grad=True)
    mg.viz.step_through((v * 2).sum(), tmp_path / "inf.html")
    (value,) = [t["value"] for t in embedded(tmp_path / "inf.html")["tensors"].values() if t["kind"] == "leaf"]
    assert value["values"] == [1.0, "Infinity", "NaN"]  # JSON has no inf or nan; the page's Number() reads these
    seed_page(tmp_path / "rnn.html")
    assert os.path.getsize(tmp_path / "rnn.html") < 100_000  # docs/minigrad/step-through.md states the size


def test_the_picture_leaves_the_final_gradients_to_the_last_step(tmp_path):
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    mg.viz.step_through(loss, tmp_path / "p.html", names={"x<y>": x})  # a name that needs escaping
    assert "grad: mean" in mg.viz.to_dot(loss) and "grad: mean" not in mg.viz.to_dot(loss, grads=False)
    assert embedded(tmp_path / "p.html")["tensors"][f"n{id(x)}"]["label"] == "x<y>"
    assert "x<y>" not in open(tmp_path / "p.html").read().split('id="data">')[1]  # written as \u003c


def test_without_graphviz_the_page_says_so_and_still_steps(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    mg.viz.step_through((x * x).sum(), tmp_path / "p.html")
    text = open(tmp_path / "p.html").read()
    assert "needs Graphviz's dot program" in text and "<svg" not in text
    assert len(embedded(tmp_path / "p.html")["backward"]) == 2


def test_bad_calls_name_the_problem(tmp_path):
    leaf = mg.tensor([1.0], requires_grad=True)
    with pytest.raises(ValueError, match="needs a graph's output"):
        mg.viz.step_through(leaf, tmp_path / "p.html")
    with mg.viz.record_backward() as record:
        (leaf * 2).sum().backward()
    with pytest.raises(ValueError, match="exactly one backward from this output"):
        mg.viz.step_through((leaf * 3).sum(), tmp_path / "p.html", record=record)
    assert not (tmp_path / "p.html").exists()


def test_rnn_cell_cli_writes_the_page(tmp_path, capsys):
    assert rnn_cell_main(["--step-through", str(tmp_path / "rnn.html")]) == 0
    assert "step-through page written to" in capsys.readouterr().out
    leaves = embedded(tmp_path / "rnn.html")["leaves"]
    assert [leaf["grad"]["shape"] for leaf in leaves] == [[20, 10], [20, 20]]  # W_x, then W_h: the engine's order


# ----------------------------------------------------------------------------- in a real browser


@pytest.fixture
def chromium():
    """Headless Chromium through selenium and Debian's chromedriver; nothing is downloaded. Skipped
    with the reason when missing, unless REQUIRE_BROWSER=1 (as CI sets), where that fails."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install selenium)")
    if missing:
        message = f"a browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def test_click_through_the_seed_page_in_chromium(chromium, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    values = seed_page(tmp_path / "rnn.html")
    data = embedded(tmp_path / "rnn.html")
    total = len(data["forward"]) + len(data["backward"]) + 1
    chromium.get((tmp_path / "rnn.html").as_uri())
    where = chromium.find_element(By.ID, "where")
    assert where.text == f"step 1 / {total} (forward)"
    assert float(chromium.find_element(By.TAG_NAME, "body").get_attribute("data-ready-after-ms")) < 1000

    chromium.find_element(By.ID, "play").click()  # play moves on by itself
    WebDriverWait(chromium, 5).until(lambda d: where.text.startswith("step 2 /"))
    chromium.find_element(By.ID, "play").click()  # pause
    chromium.find_element(By.ID, "prev").click()
    for step in range(2, total + 1):
        chromium.find_element(By.ID, "next").click()
        assert where.text.startswith(f"step {step} / {total}")
        assert chromium.find_element(By.CSS_SELECTOR, "#step h2").text  # every step shows something
    assert where.text.endswith("(leaves)") and not chromium.find_element(By.ID, "next").is_enabled()

    cells = chromium.find_elements(By.CSS_SELECTOR, 'table[data-role="grad"][data-of="W_h"] td')
    on_screen = np.array([float(c.text) for c in cells]).reshape(20, 20)
    np.testing.assert_allclose(on_screen, values["W_h"].grad.data, rtol=1e-3)  # shown to 4 digits
    if shutil.which("dot"):
        assert len(chromium.find_elements(By.CSS_SELECTOR, "#graph g.node.current")) == 2  # W_h and W_x
    chromium.save_screenshot(str(tmp_path / "last-step.png"))
    assert (tmp_path / "last-step.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    chromium.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
    assert where.text == f"step {total - 1} / {total} (backward)"
    assert "MmBackward" in chromium.find_element(By.CSS_SELECTOR, "#step h2").text
