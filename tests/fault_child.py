"""`etam-mobile` in a child process for test_faults.py.

With ETAM_TEST_STUB_EXPORT=DIR, torch.export and the ONNX converter are replaced by copying
DIR's .onnx artifacts (a real export of the same tiny model), so an export that the test kills
takes seconds; everything else (partial folder, manifest, checksums, commit) is the real code.
Conversion itself is tested in test_export.py, and unstubbed in the slow tests here.
"""
import os
import shutil
import sys


def stub_converters(src: str, patch=setattr) -> None:
    """torch.export and the ONNX converter replaced by copies of SRC's artifacts of the same file
    name (slot-bucket graphs too); in process, pass monkeypatch.setattr as `patch`."""
    from etam_export import artifact, onnx

    patch(artifact, "torch_export", lambda module, inputs, stage: None)
    patch(onnx, "prepare", lambda module, ep, inputs, name: None)

    def write(ep, path, spec):
        shutil.copyfile(os.path.join(src, os.path.basename(path)), path)
        return {}

    patch(onnx, "write", write)


if __name__ == "__main__":
    if os.environ.get("ETAM_TEST_STUB_EXPORT"):
        stub_converters(os.environ["ETAM_TEST_STUB_EXPORT"])
    from etam_mobile.cli import main

    sys.exit(main(sys.argv[1:]))
