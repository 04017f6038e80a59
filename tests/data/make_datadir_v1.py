"""Make a data folder with liver-node 0.1 (main before the workflow interface): run from its source tree."""
import shutil, sys, time
from pathlib import Path
from pynetdicom import AE
import factories as F
from pydicom.uid import generate_uid
from node.config import parse_config
from node.service import Node

out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
cfg = parse_config({"node": {"ae_title": "LIVERNODE", "host": "127.0.0.1", "port": 11199, "data_dir": str(out)},
                    "completion": {"stable_seconds": 1},
                    "outbox": {"backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.2}}, base_dir=out)
node = Node(cfg)
node.start()
pid = "P-V1"
perf = F.ct_series(pid, 2, time_points=3, description="perfusion")
nm_study, nm_for = generate_uid(), generate_uid()
spect_ct = F.ct_series(pid, 2, study_uid=nm_study, for_uid=nm_for, description="SPECT/CT")
nm = F.nm_multiframe(pid, study_uid=nm_study, for_uid=nm_for)
ae = AE(ae_title="MODALITY")
for uid in {ds.SOPClassUID for ds in perf + spect_ct + [nm]}:
    ae.add_requested_context(uid)
assoc = ae.associate("127.0.0.1", 11199, ae_title="LIVERNODE")
for ds in perf + spect_ct + [nm]:
    assert assoc.send_c_store(ds).Status == 0
assoc.release()
end = time.time() + 60
while time.time() < end:
    case = node.index.get_case(pid)
    if case is not None and case.state in ("done", "failed", "stable"):
        break
    time.sleep(0.2)
time.sleep(2)
node.stop()
print(node_state := case.state, case.reason)
