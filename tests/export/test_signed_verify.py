"""`clipinspect verify-bundle --trusted-keys`: the signed/unsigned/tampered/wrong-key matrix on
the real tiny exported bundle; only the good one reaches the parity check."""

from __future__ import annotations

from edge_runtime.cli import main
from tests.plugins.signing import make_keys, make_matrix


def test_verify_bundle_matrix(tiny_bundle, mvtec_root, tmp_path, capsys):
    keys = make_keys(tmp_path / "keys")
    images = mvtec_root / "bottle" / "test"
    for name, (root, fragments) in make_matrix(tiny_bundle, tmp_path / "m", keys).items():
        rc = main(
            [
                "-q",
                "verify-bundle",
                "--bundle",
                str(root),
                "--images",
                str(images),
                "--max-images",
                "2",
                "--trusted-keys",
                str(keys.trusted_dir),
            ]
        )
        cap = capsys.readouterr()
        if name == "good":
            assert rc == 0, cap.err
            assert "PASS" in cap.out
            continue
        errors = [ln for ln in cap.err.replace("\r", "\n").splitlines() if ": error: " in ln]
        assert rc == 2 and len(errors) == 1 and "Traceback" not in cap.err, (name, cap.err)
        assert errors[0].startswith("clipinspect verify-bundle: error: ")
        for frag in fragments:
            assert frag in errors[0], (name, errors[0])
