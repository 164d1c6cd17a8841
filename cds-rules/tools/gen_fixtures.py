#!/usr/bin/env python3
"""Regenerates cds-rules/tests/*.json (boundary-value fixtures). Run from cds-rules/:
python3 tools/gen_fixtures.py. Hand-edited fixtures are fine too; this only saves typing."""
import datetime, json, os

NOW = "2025-03-10T12:00:00Z"
N = [0]

def ctx(event_type="VITALS", vitals=None, recent=None, patient=None, dept=None, now=NOW, **ev):
    N[0] += 1
    e = {"event_id": f"fx-{N[0]}", "event_type": event_type, "event_timestamp": now,
         "hospital_id": 1, "department": "Surgery", "gender": "F", "age": 67,
         "admission_time": "2025-03-09T08:00:00Z", "admission_priority": "Emergency",
         "diagnosis_code": "J18.9"}
    e.update(ev)
    if vitals is not None:
        e["vitals"] = vitals
    p = {"patient": "pk-0001", "admitted": True, "hospital_id": 1, "department": "Surgery",
         "admission_time": "2025-03-09T08:00:00Z", "age": 67, "gender": "F",
         "recent_vitals": recent or [], "last_discharge_time": None}
    p.update(patient or {})
    d = {"hospital_id": 1, "department": "Surgery", "occupied": 20, "bed_capacity": 40, "occupancy_pct": 50.0}
    d.update(dept or {})
    return {"event": e, "patient": p, "department": d, "now": now}

NORMAL = {"respiratory_rate": 16, "oxygen_saturation": 97, "supplemental_o2": False, "bp_systolic": 120,
          "heart_rate": 72, "consciousness": "A", "temperature_c": 37.0}

def v(**k):
    x = dict(NORMAL); x.update(k); return x

def fx(name, c, fired, data=None, action=None):
    o = {"name": name, "ctx": c, "expect": {"fired": fired}}
    if data is not None: o["expect"]["data"] = data
    if action is not None: o["expect"]["action"] = action
    return o

def news2():
    out = [fx("all normal scores 0", ctx(vitals=v()), False, {"score": 0, "band": "low", "complete_score": 0})]
    # each parameter's boundaries: (field, value, expected parameter score, key)
    table = [("respiratory_rate", "respiration_rate", [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3)]),
             ("oxygen_saturation", "spo2", [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0)]),
             ("bp_systolic", "systolic_bp", [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)]),
             ("heart_rate", "pulse", [(40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2), (130, 2), (131, 3)]),
             ("temperature_c", "temperature", [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1), (39.1, 2)]),
             ("consciousness", "consciousness", [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3)])]
    for field, key, cases in table:
        for val, s in cases:
            band = "low-medium" if s == 3 else "low"
            out.append(fx(f"{field} {val} scores {s}", ctx(vitals=v(**{field: val})), s == 3,
                          {"score": s, "band": band, "scores": {key: s}}))
    out.append(fx("supplemental oxygen scores 2", ctx(vitals=v(supplemental_o2=True)), False,
                  {"score": 2, "band": "low", "scores": {"air_or_oxygen": 2}}))
    out.append(fx("aggregate 4 without a 3 is low", ctx(vitals=v(respiratory_rate=22, heart_rate=95, temperature_c=38.5)), False,
                  {"score": 4, "band": "low"}))
    out.append(fx("aggregate 5 is medium", ctx(vitals=v(respiratory_rate=22, heart_rate=95, temperature_c=38.5, oxygen_saturation=95)), True,
                  {"score": 5, "band": "medium"}, {"severity": "warning"}))
    out.append(fx("aggregate 6 is medium", ctx(vitals=v(respiratory_rate=22, heart_rate=115, temperature_c=38.5, oxygen_saturation=95)), True,
                  {"score": 6, "band": "medium"}))
    out.append(fx("aggregate 7 is high", ctx(vitals=v(respiratory_rate=22, heart_rate=115, temperature_c=38.5, oxygen_saturation=95, bp_systolic=105)), True,
                  {"score": 7, "band": "high"}, {"severity": "critical"}))
    out.append(fx("single 3 with aggregate 4 is low-medium", ctx(vitals=v(respiratory_rate=26, oxygen_saturation=95)), True,
                  {"score": 4, "band": "low-medium"}, {"severity": "info"}))
    out.append(fx("missing vitals taken from newest recent reading",
                  ctx(vitals={"heart_rate": 72},
                      recent=[{"time": "2025-03-10T11:30:00Z", "respiratory_rate": 26, "oxygen_saturation": 91, "bp_systolic": 90},
                              {"time": "2025-03-10T10:00:00Z", "respiratory_rate": 12, "oxygen_saturation": 99, "bp_systolic": 130,
                               "temperature_c": 39.5, "consciousness": "A"}]), True,
                  {"score": 11, "band": "high", "respiratory_rate": 26, "temperature_c": 39.5}))
    out.append(fx("no vitals anywhere scores 0", ctx(vitals={}), False, {"score": 0, "band": "low", "complete_score": None}))
    out.append(fx("a complete score is kept, an incomplete one not", ctx(vitals={k: x for k, x in v().items() if k != "temperature_c"}), False,
                  {"score": 0, "complete_score": None, "missing": ["temperature_c"]}))
    out.append(fx("not evoked by ADMISSION", ctx(event_type="ADMISSION", vitals=v(respiratory_rate=30)), False))
    return out

def qsofa():
    return [
        fx("RR 22 and SBP 100 (both boundaries) fire", ctx(vitals=v(respiratory_rate=22, bp_systolic=100)), True, {"score": 2}, {"severity": "warning"}),
        fx("RR 21 and SBP 100 do not", ctx(vitals=v(respiratory_rate=21, bp_systolic=100)), False, {"score": 1}),
        fx("RR 22 and SBP 101 do not", ctx(vitals=v(respiratory_rate=22, bp_systolic=101)), False, {"score": 1}),
        fx("altered mentation C and RR 22 fire", ctx(vitals=v(respiratory_rate=22, consciousness="C")), True, {"score": 2}),
        fx("alert A and SBP 90 do not", ctx(vitals=v(bp_systolic=90)), False, {"score": 1}),
        fx("all three criteria: critical", ctx(vitals=v(respiratory_rate=30, bp_systolic=80, consciousness="U")), True, {"score": 3}, {"severity": "critical"}),
        fx("normal", ctx(vitals=v()), False, {"score": 0}),
        fx("SBP from recent reading", ctx(vitals={"respiratory_rate": 24, "consciousness": "A"},
            recent=[{"time": "2025-03-10T11:00:00Z", "bp_systolic": 95}]), True, {"score": 2, "bp_systolic": 95}),
        fx("not evoked by TRANSFER", ctx(event_type="TRANSFER", vitals=v(respiratory_rate=30, bp_systolic=80)), False),
    ]

def sirs():
    return [
        fx("temp 38.1 and HR 91 fire", ctx(vitals=v(temperature_c=38.1, heart_rate=91)), True, {"count": 2}, {"severity": "info"}),
        fx("temp 38.0 and HR 91 do not (38.0 is not > 38)", ctx(vitals=v(temperature_c=38.0, heart_rate=91)), False, {"count": 1}),
        fx("temp 35.9 and RR 21 fire", ctx(vitals=v(temperature_c=35.9, respiratory_rate=21)), True, {"count": 2}),
        fx("temp 36.0 and RR 21 do not (36.0 is not < 36)", ctx(vitals=v(temperature_c=36.0, respiratory_rate=21)), False, {"count": 1}),
        fx("HR 90 and RR 21 do not", ctx(vitals=v(heart_rate=90, respiratory_rate=21)), False, {"count": 1}),
        fx("HR 91 and RR 20 do not", ctx(vitals=v(heart_rate=91, respiratory_rate=20)), False, {"count": 1}),
        fx("all three: warning", ctx(vitals=v(temperature_c=39, heart_rate=120, respiratory_rate=28)), True, {"count": 3}, {"severity": "warning"}),
        fx("normal", ctx(vitals=v()), False, {"count": 0}),
    ]

def hypoxia():
    r = lambda t, s: {"time": t, "oxygen_saturation": s}
    return [
        fx("SpO2 89 fires", ctx(vitals=v(oxygen_saturation=89)), True, {"low": True}, {"severity": "warning"}),
        fx("SpO2 90 does not", ctx(vitals=v(oxygen_saturation=90)), False, {"low": False}),
        fx("SpO2 84 is critical", ctx(vitals=v(oxygen_saturation=84)), True, {"low": True}, {"severity": "critical"}),
        fx("fall of 5 within the hour fires", ctx(vitals=v(oxygen_saturation=92), recent=[r("2025-03-10T11:30:00Z", 97)]), True,
           {"drop": 5, "falling": True, "baseline_1h": 97}),
        fx("fall of 4 within the hour does not", ctx(vitals=v(oxygen_saturation=93), recent=[r("2025-03-10T11:30:00Z", 97)]), False,
           {"drop": 4, "falling": False}),
        fx("fall of 5 measured against a reading exactly 60 min old fires", ctx(vitals=v(oxygen_saturation=92), recent=[r("2025-03-10T11:00:00Z", 97)]), True,
           {"falling": True}),
        fx("fall of 6 against a reading 61 min old does not", ctx(vitals=v(oxygen_saturation=92), recent=[r("2025-03-10T10:59:00Z", 98)]), False,
           {"falling": False, "baseline_1h": None}),
        fx("old low reading, no SpO2 on this event: no alert", ctx(vitals={"heart_rate": 80}, recent=[r("2025-03-10T11:50:00Z", 85)]), False),
        fx("normal", ctx(vitals=v()), False),
    ]

def capacity():
    d = lambda occ, cap=40: {"occupied": occ, "bed_capacity": cap, "occupancy_pct": 100.0 * occ / cap}
    return [
        fx("36/40 = 90 % warns", ctx(event_type="ADMISSION", dept=d(36)), True, {"occupancy_pct": 90.0, "band": "high"}, {"severity": "warning"}),
        fx("35/40 = 87.5 % does not", ctx(event_type="ADMISSION", dept=d(35)), False, {"band": "normal"}),
        fx("40/40 = 100 % is critical", ctx(event_type="TRANSFER", dept=d(40)), True, {"band": "full"}, {"severity": "critical"}),
        fx("39/40 = 97.5 % warns", ctx(event_type="TRANSFER", dept=d(39)), True, {"band": "high"}, {"severity": "warning"}),
        fx("over capacity 42/40 is critical", ctx(event_type="ADMISSION", dept=d(42)), True, {"band": "full"}),
        fx("9/10 = 90 % warns (small unit)", ctx(event_type="ADMISSION", dept=d(9, 10)), True, {"band": "high"}),
        fx("8/10 = 80 % does not", ctx(event_type="ADMISSION", dept=d(8, 10)), False),
        fx("no configured capacity does not", ctx(event_type="ADMISSION", dept={"occupied": 3, "bed_capacity": 0, "occupancy_pct": 0.0}), False),
        fx("not evoked by VITALS", ctx(event_type="VITALS", vitals=v(), dept=d(40)), False),
        fx("not evoked by DISCHARGE", ctx(event_type="DISCHARGE", dept=d(40)), False),
    ]

def long_stay():
    adm = "2025-03-07T12:00:00Z"
    c = lambda now, admitted=True: ctx(event_type="ADMISSION", now=now, admission_time=adm,
                                       patient={"admission_time": adm, "admitted": admitted})
    return [
        fx("exactly 72 h fires", c("2025-03-10T12:00:00Z"), True, {"hours": 72.0}, {"severity": "info"}),
        fx("72 h 1 min fires", c("2025-03-10T12:01:00Z"), True),
        fx("5 days fires", c("2025-03-12T12:00:00Z"), True, {"hours": 120.0}),
        fx("71 h 59 min does not", c("2025-03-10T11:59:00Z"), False),
        fx("24 h does not", c("2025-03-08T12:00:00Z"), False, {"hours": 24.0}),
        fx("discharged patient does not", c("2025-03-10T13:00:00Z", admitted=False), False),
    ]

def readmission():
    c = lambda last, adm="2025-03-10T12:00:00Z": ctx(event_type="ADMISSION", now=adm, admission_time=adm,
                                                   patient={"last_discharge_time": last, "admission_time": adm})
    return [
        fx("30 days exactly fires", c("2025-02-08T12:00:00Z"), True, {"days_since_discharge": 30.0}, {"severity": "info"}),
        fx("7 days is early: warning", c("2025-03-03T12:00:00Z"), True, {"days_since_discharge": 7.0}, {"severity": "warning"}),
        fx("1 day fires", c("2025-03-09T12:00:00Z"), True, {"days_since_discharge": 1.0}),
        fx("30 days 1 hour does not", c("2025-02-08T11:00:00Z"), False),
        fx("no previous discharge does not", c(None), False, {"days_since_discharge": None}),
        fx("90 days does not", c("2024-12-10T12:00:00Z"), False),
        fx("not evoked by VITALS", ctx(event_type="VITALS", vitals=v(), patient={"last_discharge_time": "2025-03-09T12:00:00Z"}), False),
    ]

def news2_trend():
    # ctx.patient.scores.news2 as the engine gives it: this reading's score first (news2.rhai
    # ran before), then the earlier readings', newest first.
    s = lambda t, x: {"time": f"2025-03-10T{t}:00Z", "score": x}
    c = lambda *scores: ctx(vitals=v(), patient={"scores": {"news2": list(scores)}})
    return [
        fx("0 to 3 within an hour fires below the medium band", c(s("12:00", 3), s("11:00", 0)), True,
           {"rise": 3, "slope_per_hour": 3}, {"severity": "warning", "summary": "NEWS2 up 3 points in 6 h, now 3"}),
        fx("a rise of 2 does not", c(s("12:00", 2), s("11:00", 0)), False, {"rise": 2}),
        fx("the rise is measured from the lowest score of the window", c(s("12:00", 3), s("11:00", 2), s("09:00", 0)), True,
           {"rise": 3, "slope_per_hour": 1}),
        fx("a score exactly 6 hours old counts", c(s("12:00", 3), s("06:00", 0)), True, {"rise": 3}),
        fx("a score 6 hours 1 minute old does not", c(s("12:00", 3), s("05:59", 0)), False,
           {"rise": None, "slope_per_hour": None}),
        fx("no earlier score: no trend", c(s("12:00", 3)), False, {"rise": None}),
        fx("no score of this reading (news2 did not run): no trend", c(s("11:00", 0)), False,
           {"rise": None}),
        fx("a rise into the high band fires too", c(s("12:00", 7), s("10:00", 4)), True, {"rise": 3},
           {"summary": "NEWS2 up 3 points in 6 h, now 7"}),
        fx("a fall does not", c(s("12:00", 2), s("10:00", 5)), False, {"rise": -3}),
        fx("not evoked by ADMISSION", ctx(event_type="ADMISSION", patient={"scores": {"news2": [s("12:00", 3), s("11:00", 0)]}}), False),
    ]

def lace():
    adm = "2025-03-05T12:00:00Z"   # five days before NOW: L = 4
    def c(admitted=adm, priority="Emergency", dx="J18.9", diagnoses=(), admissions=None, **ev):
        admissions = [{"time": adm, "hospital_id": 1, "department": "Surgery", "admission_priority": priority}] \
            if admissions is None else admissions
        # As the engine builds it: on a discharge the patient is no longer placed.
        return ctx(event_type="DISCHARGE", admission_time=admitted, discharge_time=NOW,
                   admission_priority=priority, diagnosis_code=dx, **ev,
                   patient={"admitted": False, "admission_time": None, "hospital_id": None, "department": None,
                            "admissions": admissions,
                            "diagnoses": [{"time": "2025-03-05T12:00:00Z", "code": d} for d in diagnoses]})
    # An admission of the history; the engine gives each the kind of its department.
    visit = lambda t, priority="Emergency", dept="Medicine": {"time": t, "hospital_id": 1, "department": dept,
                                                              **({"kind": "emergency"} if dept == "Emergency" else {}),
                                                              "admission_priority": priority}
    out = [
        fx("L 4 + A 3 = 7 is moderate: no alert", c(), False,
           {"score": 7, "band": "moderate", "points": {"length_of_stay": 4, "acuity": 3, "comorbidity": 0, "emergency_visits": 0},
            "length_of_stay_days": 5, "charlson_index": 0}),
        fx("heart failure and cancer: C 3, LACE 10 is high", c(diagnoses=["I50.9", "C50.9"]), True,
           {"score": 10, "band": "high", "charlson_index": 3, "comorbidities": ["congestive_heart_failure", "malignancy"]},
           {"severity": "warning"}),
        fx("the discharge's own diagnosis counts", c(dx="I21.4", diagnoses=["C34.9", "E11.2"]), True,
           {"charlson_index": 5, "points": {"comorbidity": 5}, "score": 12,
            "comorbidities": ["diabetes_with_complications", "malignancy", "myocardial_infarction"]}),
        fx("metastasis replaces the primary cancer: Charlson 6 scores C 5", c(priority="Elective", diagnoses=["C78.0", "C50.9"]), False,
           {"charlson_index": 6, "comorbidities": ["metastatic_solid_tumour"], "points": {"comorbidity": 5, "acuity": 0}, "score": 9}),
        fx("diabetes with complications replaces diabetes without", c(priority="Elective", diagnoses=["E11.9", "E11.2"]), False,
           {"charlson_index": 2, "comorbidities": ["diabetes_with_complications"]}),
        fx("emergency visits of the 6 months before the stay count, the stay itself not", c(
            priority="Elective",
            admissions=[visit(adm, "Elective"), visit("2025-01-10T08:00:00Z"), visit("2024-12-01T08:00:00Z", "Urgent", "Emergency"),
                        visit("2024-08-01T08:00:00Z"), visit("2025-02-01T08:00:00Z", "Elective", "Surgery")]), False,
           {"emergency_visits_6_months": 2, "points": {"emergency_visits": 2}}),
        fx("five emergency visits score E 4", c(
            admissions=[visit(adm)] + [visit(f"2025-0{m}-01T08:00:00Z") for m in (1, 2)] + [visit(f"2024-{m}-01T08:00:00Z") for m in (10, 11, 12)]), True,
           {"emergency_visits_6_months": 5, "points": {"emergency_visits": 4}, "score": 11}),
        fx("the priority missing on the discharge is the admission's", c(priority=None,
            admissions=[visit(adm, "Emergency")]), False, {"admission_priority": "Emergency", "points": {"acuity": 3}}),
        fx("no admission time on the discharge: the newest admission's", c(admitted=None, diagnoses=["I50.9", "C50.9"]), True,
           {"length_of_stay_days": 5, "score": 10}),
        fx("no admission time anywhere: no score", c(admitted=None, admissions=[]), False, {"score": None, "band": None}),
        fx("a priority in capitals counts", c(priority="EMERGENCY"), False, {"points": {"acuity": 3}}),
        fx("not evoked by ADMISSION", ctx(event_type="ADMISSION", patient={"diagnoses": [{"time": adm, "code": "C78.0"}]}), False),
    ]
    # Length of stay boundaries (elective, no comorbidity: the score is L alone).
    for hours, points in [(23, 0), (24, 1), (47, 1), (48, 2), (72, 3), (96, 4), (6 * 24, 4), (7 * 24, 5), (13 * 24, 5), (14 * 24, 7)]:
        start = (datetime.datetime(2025, 3, 10, 12, tzinfo=datetime.timezone.utc)
                 - datetime.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(fx(f"a stay of {hours} h scores L {points}", c(admitted=start, priority="Elective",
                      admissions=[visit(start, "Elective")]), False, {"points": {"length_of_stay": points}, "score": points}))
    return out

def capacity_forecast():
    def c(over, kind="ADMISSION", occupied=36, beds=40, forecast=True):
        hz = [{"hours": h, "expected": 38.0, "p10": 35.5, "p90": 40.5, "p_over_capacity": p}
              for h, p in ((4, 0.2), (8, over), (24, 0.9))] if forecast else []
        return ctx(event_type=kind, dept={"occupied": occupied, "bed_capacity": beds,
                                          "occupancy_pct": 100.0 * occupied / beds if beds else 0.0, "forecast": hz})
    return [
        fx("8-hour chance over capacity 0.51 warns", c(0.51), True,
           {"p_over_capacity": 0.51, "expected": 38.0, "p10": 35.5, "p90": 40.5}, {"severity": "warning"}),
        fx("exactly 0.5 does not", c(0.5), False, {"p_over_capacity": 0.5}),
        fx("only the 8-hour horizon counts (4 h 0.2, 24 h 0.9)", c(0.3), False),
        fx("on a transfer too", c(0.8, kind="TRANSFER"), True),
        fx("no forecast (a department without configured beds) does not", c(0.9, forecast=False), False,
           {"p_over_capacity": None}),
        fx("no configured beds does not", c(0.9, beds=0, occupied=3), False),
        fx("not evoked by VITALS", ctx(event_type="VITALS", vitals=v(), dept={"forecast": [{"hours": 8, "expected": 50.0, "p10": 45.0, "p90": 55.0, "p_over_capacity": 1.0}]}), False),
    ]

os.makedirs("tests", exist_ok=True)
for name, f in [("news2", news2), ("qsofa", qsofa), ("sirs", sirs), ("hypoxia", hypoxia), ("capacity", capacity),
                ("long_stay", long_stay), ("readmission", readmission), ("news2_trend", news2_trend),
                ("lace", lace), ("capacity_forecast", capacity_forecast)]:
    N[0] = 0
    with open(f"tests/{name}.json", "w") as fh:
        json.dump(f(), fh, indent=1)
        fh.write("\n")
