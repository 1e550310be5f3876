"""The project's bilingual medical knowledge table (knowledge.jsonl) and its label vocabularies."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TABLE = Path(__file__).with_name("knowledge.jsonl")

DEPARTMENTS = {
    "emergency": ("the emergency department", "急诊科"),
    "cardiology": ("cardiology", "心内科"),
    "respiratory": ("respiratory medicine", "呼吸内科"),
    "gastroenterology": ("gastroenterology", "消化内科"),
    "neurology": ("neurology", "神经内科"),
    "endocrinology": ("endocrinology", "内分泌科"),
    "nephrology": ("nephrology", "肾内科"),
    "urology": ("urology", "泌尿外科"),
    "dermatology": ("dermatology", "皮肤科"),
    "ophthalmology": ("ophthalmology", "眼科"),
    "ent": ("otolaryngology (ENT)", "耳鼻喉科"),
    "orthopedics": ("orthopedics", "骨科"),
    "rheumatology": ("rheumatology", "风湿免疫科"),
    "infectious": ("infectious diseases", "感染科"),
    "psychiatry": ("psychiatry", "精神科"),
    "gynecology": ("obstetrics and gynecology", "妇产科"),
    "pediatrics": ("pediatrics", "儿科"),
    "hematology": ("hematology", "血液科"),
    "general_surgery": ("general surgery", "普通外科"),
    "dentistry": ("dentistry", "口腔科"),
    "oncology": ("oncology", "肿瘤科"),
}

SYSTEMS = {
    "cardiovascular": ("the cardiovascular system", "心血管系统"),
    "respiratory": ("the respiratory system", "呼吸系统"),
    "digestive": ("the digestive system", "消化系统"),
    "nervous": ("the nervous system", "神经系统"),
    "endocrine": ("the endocrine system", "内分泌系统"),
    "urinary": ("the urinary system", "泌尿系统"),
    "skin": ("the skin", "皮肤"),
    "eye": ("the eyes", "眼睛"),
    "ent": ("the ears, nose and throat", "耳鼻喉"),
    "musculoskeletal": ("the musculoskeletal system", "肌肉骨骼系统"),
    "immune": ("the immune system", "免疫系统"),
    "reproductive": ("the reproductive system", "生殖系统"),
    "blood": ("the blood", "血液系统"),
    "mental": ("mental health", "精神心理"),
    "oral": ("the mouth and teeth", "口腔"),
    "infectious": ("the whole body (infection)", "全身（感染）"),
}

LANGS = ("en", "zh")


@dataclass(frozen=True)
class Condition:
    """One condition in one language."""
    id: str
    lang: str
    name: str
    system_key: str
    system: str
    department_key: str
    department: str
    symptoms: tuple[str, ...]
    care: str
    red_flags: tuple[str, ...]


def load(path: Path = TABLE) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def localized(row: dict, lang: str) -> Condition:
    i = LANGS.index(lang)
    return Condition(
        id=row["id"], lang=lang, name=row[f"name_{lang}"],
        system_key=row["system"], system=SYSTEMS[row["system"]][i],
        department_key=row["department"], department=DEPARTMENTS[row["department"]][i],
        symptoms=tuple(row[f"symptoms_{lang}"]), care=row[f"care_{lang}"],
        red_flags=tuple(row[f"red_flags_{lang}"]),
    )
