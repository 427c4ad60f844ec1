# usage: setup.py API TOKEN N [FILE]: registers the organization, hires N employees through the API, writes their ids to FILE (employees.txt)
import json, sys, urllib.request, concurrent.futures
api, token, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
def call(method, path, body=None, key=None):
    req = urllib.request.Request(api + path, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", "Bearer " + token); req.add_header("content-type", "application/json")
    if key: req.add_header("Idempotency-Key", key)
    with urllib.request.urlopen(req) as r: return json.loads(r.read() or b"{}")
call("POST", "/v1/organization", {"name": "Bench", "base_currency": "USD", "pay_schedule": {"frequency": "monthly", "anchor_date": "2026-01-01"}})
def hire(i):
    r = call("POST", "/v1/employees", {"personal": {"full_name": f"E {i}", "email": None, "address": None}, "position": "Clerk", "department": "Ops",
        "rate": {"amount": {"amount": "5000.00", "currency": "USD"}, "basis": "monthly"}, "pay_frequency": "monthly", "start_date": "2025-06-01"}, key=f"hire-{i}")
    return r["employee_id"]
with concurrent.futures.ThreadPoolExecutor(8) as ex: ids = list(ex.map(hire, range(n)))
open(sys.argv[4] if len(sys.argv) > 4 else "employees.txt", "w").write("\n".join(ids) + "\n")
print(len(ids), "hired")
