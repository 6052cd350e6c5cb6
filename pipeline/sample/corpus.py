"""An invented sample corpus: clinical notes and PubMed-style abstracts with gold entity spans.

Every name, age, dose and finding is made up by a seeded generator; nothing describes a
real person. Labels are ``Disease`` and ``Chemical``, as in BC5CDR. Spans are character
offsets into the document text, end exclusive, exact by construction: text is built by
appending pieces and recording where each entity piece lands.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas
from pipeline.context import lexicon as context_lexicon
from pipeline.storage import files as storage

DISEASE = "Disease"
CHEMICAL = "Chemical"
SOURCE = "source"
SPLIT = "split"
HELDOUT_FRACTION = 0.25  # of each source's documents
UNSEEN_FRACTION = 0.15  # of each lexicon: surface forms only heldout documents may use

DOC_SCHEMA = pa.schema(
    [
        pa.field(schemas.DOC_ID, pa.string(), nullable=False),
        pa.field(schemas.TEXT, pa.string(), nullable=False),
        pa.field(SOURCE, pa.string(), nullable=False),
        pa.field(SPLIT, pa.string(), nullable=False),
    ]
)
GOLD_SCHEMA = pa.schema(
    [
        pa.field(schemas.DOC_ID, pa.string(), nullable=False),
        pa.field(schemas.START, pa.int32(), nullable=False),
        pa.field(schemas.END, pa.int32(), nullable=False),
        pa.field(schemas.TEXT, pa.string(), nullable=False),
        pa.field(schemas.LABEL, pa.string(), nullable=False),
        # The gold context of the mention (the job's entities carry the same columns).
        pa.field(schemas.NEGATION, pa.string(), nullable=False),
        pa.field(schemas.TEMPORALITY, pa.string(), nullable=False),
        pa.field(schemas.EXPERIENCER, pa.string(), nullable=False),
    ]
)


def _lexicon(block: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(" ".join(x.split()) for x in block.split(";") if x.strip()))


DISEASES = _lexicon("""
hypertension; type 2 diabetes mellitus; type 1 diabetes mellitus; acute myocardial infarction;
congestive heart failure; atrial fibrillation; coronary artery disease; COPD; asthma;
chronic obstructive pulmonary disease; community-acquired pneumonia; pneumonia; hyperlipidemia;
chronic kidney disease; acute kidney injury; nephrotic syndrome; hypothyroidism; hyperthyroidism;
Graves disease; osteoarthritis; rheumatoid arthritis; systemic lupus erythematosus; gout;
osteoporosis; major depressive disorder; generalized anxiety disorder; bipolar disorder;
schizophrenia; Alzheimer disease; Parkinson disease; multiple sclerosis; epilepsy; seizures;
migraine; ischemic stroke; transient ischemic attack; deep vein thrombosis; pulmonary embolism;
peripheral artery disease; abdominal aortic aneurysm; gastroesophageal reflux disease;
peptic ulcer disease; upper gastrointestinal bleeding; Crohn disease; ulcerative colitis;
irritable bowel syndrome; acute pancreatitis; cirrhosis; hepatitis C; hepatic encephalopathy;
cholecystitis; appendicitis; diverticulitis; urinary tract infection; pyelonephritis; sepsis;
septic shock; cellulitis; osteomyelitis; HIV infection; tuberculosis; iron deficiency anemia;
anemia; thrombocytopenia; neutropenia; sickle cell disease; breast cancer; colorectal cancer;
non-small cell lung cancer; prostate cancer; pancreatic adenocarcinoma; hepatocellular carcinoma;
acute myeloid leukemia; chronic lymphocytic leukemia; diffuse large B-cell lymphoma; melanoma;
multiple myeloma; glioblastoma; obstructive sleep apnea; obesity; metabolic syndrome;
hyperkalemia; hyponatremia; hypoglycemia; diabetic ketoacidosis; diabetic nephropathy;
peripheral neuropathy; cardiomyopathy; aortic stenosis; ventricular tachycardia; bradycardia;
hypotension; QT prolongation; hepatotoxicity; drug-induced liver injury; nephrotoxicity;
ototoxicity; cardiotoxicity; rhabdomyolysis; Stevens-Johnson syndrome; angioedema; anaphylaxis;
lactic acidosis; serotonin syndrome; tardive dyskinesia; delirium; dementia; psoriasis;
atopic dermatitis; benign prostatic hyperplasia; endometriosis; polycystic ovary syndrome;
preeclampsia; interstitial lung disease; pulmonary fibrosis; pulmonary hypertension
""")
CHEMICALS = _lexicon("""
metformin; insulin glargine; insulin lispro; glipizide; sitagliptin; empagliflozin; liraglutide;
lisinopril; enalapril; losartan; valsartan; amlodipine; hydrochlorothiazide; furosemide;
spironolactone; metoprolol tartrate; metoprolol succinate; carvedilol; atenolol; digoxin;
amiodarone; diltiazem; warfarin; apixaban; rivaroxaban; heparin; enoxaparin; clopidogrel; aspirin;
acetylsalicylic acid; atorvastatin; simvastatin; rosuvastatin; ezetimibe; levothyroxine;
methimazole; prednisone; methylprednisolone; dexamethasone; hydrocortisone; albuterol; tiotropium;
fluticasone; montelukast; omeprazole; pantoprazole; famotidine; ondansetron; metoclopramide;
lactulose; rifaximin; acetaminophen; ibuprofen; naproxen; celecoxib; morphine sulfate; oxycodone;
hydromorphone; fentanyl; tramadol; gabapentin; pregabalin; sertraline; fluoxetine; escitalopram;
venlafaxine; bupropion; trazodone; lithium carbonate; valproic acid; lamotrigine; levetiracetam;
phenytoin; carbamazepine; haloperidol; quetiapine; olanzapine; risperidone; lorazepam; diazepam;
alprazolam; zolpidem; donepezil; levodopa; carbidopa; vancomycin; piperacillin-tazobactam;
ceftriaxone; cefazolin; azithromycin; doxycycline; ciprofloxacin; levofloxacin; nitrofurantoin;
trimethoprim-sulfamethoxazole; metronidazole; gentamicin; amoxicillin-clavulanate; fluconazole;
acyclovir; tenofovir; isoniazid; rifampin; cisplatin; carboplatin; oxaliplatin; doxorubicin;
cyclophosphamide; paclitaxel; docetaxel; 5-fluorouracil; methotrexate; gemcitabine; imatinib;
tamoxifen; letrozole; allopurinol; colchicine; hydroxychloroquine; sodium bicarbonate;
potassium chloride; magnesium sulfate; calcium gluconate; ferrous sulfate; cyanocobalamin;
folic acid; nitroglycerin; epinephrine; norepinephrine; vasopressin; propofol; ketamine; naloxone;
nicotine; cocaine; caffeine; streptozotocin; puromycin aminonucleoside
""")

# Agents of animal models and exposures: abstracts name them, medication lists never do.
_RESEARCH_ONLY = frozenset({"streptozotocin", "puromycin aminonucleoside", "cocaine", "nicotine"})

# Plain words that share the register of entities but are not entities (decoys).
_PROCS = _lexicon("""a transthoracic echocardiogram; a CT scan of the abdomen and pelvis;
a chest radiograph; an upper endoscopy; a colonoscopy; an MRI of the brain; a renal ultrasound;
a cardiac catheterization; a lumbar puncture; an electrocardiogram; a pulmonary function test""")
_COMPLAINTS = _lexicon("""poor oral intake; a fall at home; generalized weakness; a productive
cough; an abnormal outpatient laboratory result; decreased exercise tolerance; intermittent
palpitations; difficulty sleeping; unintentional weight loss; lightheadedness on standing""")
_NAMES = _lexicon(
    "Alvarez; Brennan; Chandra; Dubois; Eriksen; Fujita; Haddad; Ivanova; Kowalski;"
    "Lindqvist; Mbeki; Novak; Okafor; Petrov; Quinn; Rahman; Sato; Torres; Varga"
)
_WORDS: dict[str, tuple[str, ...]] = {
    "freq": ("once daily", "twice daily", "every 8 hours", "at bedtime", "as needed", "weekly"),
    "route": ("by mouth", "intravenously", "subcutaneously", "orally"),
    "mg": ("2.5 mg", "5 mg", "10 mg", "20 mg", "25 mg", "40 mg", "81 mg", "250 mg", "500 mg"),
    "kg": ("1 mg/kg", "5 mg/kg", "10 mg/kg", "20 mg/kg", "50 mg/kg", "100 mg/kg"),
    "animal": ("rats", "mice", "Wistar rats", "Sprague-Dawley rats", "C57BL/6 mice", "rabbits"),
    "measure": ("blood pressure", "renal function", "exercise tolerance", "glycemic control"),
    "service": ("home health services", "outpatient physical therapy", "a rolling walker"),
    "population": ("older adults", "children", "postmenopausal women", "hospitalized patients"),
    "relative": ("wife", "husband", "daughter", "son", "sister"),
    "job": ("teacher", "bus driver", "accountant", "farmer", "retired electrician", "nurse"),
    "p": ("< 0.001", "= 0.002", "= 0.01", "= 0.03", "= 0.04", "= 0.21"),
    "proc": _PROCS,
    "complaint": _COMPLAINTS,
    "doctor": _NAMES,
}
_NUMBERS: dict[str, Callable[[random.Random], str]] = {
    "age": lambda r: str(r.randint(19, 94)),
    "a_age": lambda r: (lambda a: f"{'an' if a[0] == '8' or a == '18' else 'a'} {a}")(
        str(r.randint(18, 94))
    ),
    "n": lambda r: str(r.randint(2, 14)),
    "big": lambda r: str(r.randint(40, 2400)),
    "year": lambda r: str(r.randint(1998, 2023)),
    "bp": lambda r: f"{r.randint(96, 178)}/{r.randint(54, 104)}",
    "hr": lambda r: str(r.randint(52, 124)),
    "rr": lambda r: str(r.randint(12, 28)),
    "temp": lambda r: f"{r.uniform(36.1, 39.4):.1f}",
    "spo2": lambda r: str(r.randint(88, 100)),
    "pct": lambda r: f"{r.uniform(1, 60):.1f}",
    "ratio": lambda r: f"{r.uniform(0.4, 3.2):.2f}",
    "lab": lambda r: (
        f"white blood cell count {r.uniform(3, 19):.1f}, hemoglobin {r.uniform(7, 16):.1f}, "
        f"platelets {r.randint(60, 450)}, sodium {r.randint(124, 146)}, "
        f"potassium {r.uniform(3.0, 6.1):.1f}, creatinine {r.uniform(0.6, 4.2):.2f}"
    ),
}

_OPENING = """
The patient is {a_age}-year-old {sex} with a history of {D:hist}, {D:hist}, and {D:hist} who\
 presents with {complaint}.
This is {a_age}-year-old {sex} with {D} and {D}, admitted with {complaint}.
{He} is {a_age}-year-old {job} with known {D} who was referred by Dr. {doctor} for {complaint}.
"""
_HPI = """
{He} was started on {C} {mg} {freq} by {his} primary care physician {n} weeks ago.
{He} reports good adherence to {C} but admits to missing doses of {C} over the past month.
{D:hist} was diagnosed {n} years ago and has been managed with {C}.
There is no prior history of {D:neg+hist} or {D:neg+hist}.
In the emergency department, {he} received {C} {mg} {route} and was given {C} for {complaint}.
Of note, {he} was recently treated for {D} with a {n}-day course of {C}.
{He} denies any personal history of {D:neg+hist}, although {his} {relative} has {D:fam}.
{C} was held on admission because of concern for {D:pos}.
Initial blood pressure was {bp} mmHg with a heart rate of {hr} beats per minute.
{He} was seen by Dr. {doctor} in clinic, where {C} was increased to {mg} {freq}.
Workup at the outside hospital included {proc}, which was unremarkable.
{He} had a similar episode in {year} attributed to {D:hist} (treated with {C:hist}).
Symptoms were partially relieved by {C}, and {he} has not tried {C:neg}.
{His} {D} has been difficult to control despite {C}, {C}, and lifestyle changes.
{He} was switched to an alternative agent ({C}) after developing {D}."""
_COURSE = """On hospital day {n}, {he} developed {D} and {C} was discontinued.
{C} was titrated to {mg} {freq} with improvement in {his} {measure}.
Cardiology was consulted and recommended continuing {C} for {D}.
{Proc} was repeated on day {n} and showed no evidence of {D:neg}.
{His} {D} was managed with {C} and {C}, and {he} remained hemodynamically stable.
Because of {D}, the dose of {C} was reduced to {mg}.
{He} was transitioned from intravenous {C} to oral {C} on day {n}.
Blood cultures remained negative, and {C} was stopped after {n} days.
Physical therapy evaluated {him} and recommended discharge with {service}.
Laboratory studies on day {n} showed {lab}.
The patient tolerated {C} without evidence of {D:neg}.
{Cc} levels were monitored daily and remained in the therapeutic range.
There were no signs of {D:neg} during this admission; {C} was continued.
{He} was counselled about the risk of {D:hyp} associated with {C}.
A family meeting was held with {his} {relative}, and the plan of care was reviewed."""
_PLAN = """{Dc}: continue {C} {mg} {freq}; recheck {measure} in {n} days.
{Dc}, likely secondary to {C}. Hold {C} and repeat laboratory studies in the morning.
History of {D:hist}: stable, continue home {C}.
Prophylaxis: {C} {mg} {route} per protocol.
{Dc}, new this admission. Start {C} and obtain {proc}.
{Dc}: well controlled on {C}; no changes today."""
_DISPOSITION = "Disposition: home once tolerating diet; follow up with Dr. {doctor} in {n} weeks."
# Openers that vary prose sentences; a sentence after one starts in lower case.
_NOTE_LEADS = ("Overnight, ", "Later that week, ", "Subsequently, ", "Per the team, ", "Of note, ")
_ABSTRACT_LEADS = ("In addition, ", "Notably, ", "Moreover, ", "In a secondary analysis, ")
_LOWER_START = {"{He}": "{he}", "{His}": "{his}", "{Cc}": "{C}", "{Dc}": "{D}", "{Proc}": "{proc}"}
_PMH = """{Dc}.
{Dc}, diagnosed in {year}.
{Dc}, well controlled.
{Dc}, evaluated with {proc} in {year}.
Remote history of {D}."""
_MEDS = """{Cc} {mg} {route} {freq}.
{Cc} {mg} {freq}.
{Cc} {mg} daily as needed for {complaint}.
{Cc} {mg} {route} {freq}, recently started."""
_OTHER = {
    "ALLERGIES": """NO KNOWN DRUG ALLERGIES.
{Cc} (rash).
{Cc}, which caused {D}.
{Cc} and {C} (hives).""",
    "SOCIAL HISTORY": """{He} lives with {his} {relative} and works as a {job}.
{He} quit smoking {n} years ago and drinks alcohol only socially.
{He} denies illicit drug use and walks {n} blocks daily.""",
    "FAMILY HISTORY": """Mother with {D}. Father died of {D} at age {age}.
Family history is negative for {D:neg}.
{His} {relative} has {D} and {D}.""",
    "PHYSICAL EXAMINATION": """
VITAL SIGNS: Temperature {temp} C, blood pressure {bp}, heart rate {hr}, respiratory rate {rr}.
Oxygen saturation was {spo2}% on room air.
GENERAL: Alert and oriented, in no acute distress. HEENT: Mucous membranes moist.
LUNGS: Clear to auscultation bilaterally. HEART: Regular rate and rhythm, no murmurs.
ABDOMEN: Soft, nontender, nondistended. EXTREMITIES: No edema.""",
    "LABORATORY DATA": """On admission, {lab}.
{Proc} showed findings consistent with {D}.
Repeat studies showed {lab}.""",
}
_TITLE = """{Cc}-induced {D} in {animal}: role of oxidative stress.
Efficacy of {C} versus {C} in patients with {D}: a randomized controlled trial.
Risk of {D} associated with {C} use: a population-based cohort study.
{Cc} for the treatment of {D} in {population}.
Protective effect of {C} against {C}-induced {D} in {animal}.
{Dc} after exposure to {C}: a case series.
Long-term outcomes of {C} therapy in {D}.
{Dc} in patients treated with {C}: a retrospective analysis."""
_ABSTRACT = {
    "BACKGROUND": """{Dc} is a recognised complication of treatment with {C}.
The mechanisms underlying {C}-induced {D} remain poorly understood.
{Cc} is widely used in the management of {D}, but its effect on {D} is unclear.
Previous studies have suggested that {C} may reduce the incidence of {D}.
Patients with {D} are at increased risk of {D}.
First-line agents ({C}, {C}) are recommended for {D}, yet adherence remains poor.
We aimed to assess whether {C} prevents {D} in {population}.""",
    "METHODS": """
We conducted a double-blind trial of {big} patients with {D} assigned to {C} ({mg} {freq}) or\
 placebo.
Male {animal} received {C} ({kg}, intraperitoneally) for {n} days.
The primary outcome was the incidence of {D} at {n} weeks.
Data were obtained from a national registry of {big} adults between {year} and 2024.
Serum markers, {measure}, and histological changes were evaluated at {n} time points.
Cox proportional hazards models were used to estimate hazard ratios for {D}.
Animals were pretreated with {C} or vehicle {n} hours before {C} administration.""",
    "RESULTS": """
{Cc} significantly reduced the incidence of {D} versus placebo ({pct}% vs {pct}%; P {p}).
{Dc} occurred in {n} of {big} patients ({pct}%) receiving {C}.
Use of {C} was associated with an increased risk of {D} (hazard ratio, {ratio}; P {p}).
Pretreatment with {C} attenuated the {D} induced by {C}.
No cases of {D} were observed in the control group.
Patients given the combination ({C} plus {C}) had fewer episodes of {D} ({pct}%).
The most frequent adverse events were {D}, {D}, and {D}.
Median follow-up was {n} months, and {pct}% of participants discontinued {C}.""",
    "CONCLUSIONS": """{Cc} may be a safe alternative to {C} in patients with {D}.
These findings suggest that {C} protects against {D}.
Clinicians should monitor patients receiving {C} for signs of {D}.
Further studies are needed to clarify the role of {C} in {D}.""",
}

# A slot: {D} or {C} (an entity), {Dc} (capitalised), {D:neg+hist} (with its gold context).
_SLOT = re.compile(r"\{(\w+)(?::([\w+]+))?\}")
# Gold context tags: what each sets (axis, value); an entity without a tag is affirmed,
# recent and the patient's.
_TAGS = {
    "neg": ("negation", "negated"),
    "pos": ("negation", "possible"),
    "hist": ("temporality", "historical"),
    "hyp": ("temporality", "hypothetical"),
    "fam": ("experiencer", "other"),
}
# Sections whose entities are, unless a tag says otherwise, historical or someone else's.
_SECTION_TAGS = {"PAST MEDICAL HISTORY": "hist", "ALLERGIES": "hist", "FAMILY HISTORY": "fam"}
Segment = tuple[str, str | None]  # (text, label or None for plain text)


def _lines(block: str) -> tuple[str, ...]:
    return tuple(line for line in block.splitlines() if line.strip())


class _Writer:
    """Renders templates for one document: its patient, its focus entities, its split."""

    def __init__(self, rng: random.Random, pools: dict[str, tuple[str, ...]], focus: int) -> None:
        self.rng = rng
        self.pools = pools
        # One patient or study keeps returning to the same few conditions and drugs.
        self.focus = {lab: rng.sample(pool, rng.randint(1, focus)) for lab, pool in pools.items()}
        self.decks: dict[str, list[str]] = {}
        male = rng.random() < 0.5
        self.words = {"sex": "man" if male else "woman", "he": "he" if male else "she"}
        self.words |= {"his": "his" if male else "her", "him": "him" if male else "her"}

    def pick(self, label: str) -> str:
        source = self.focus[label] if self.rng.random() < 0.7 else self.pools[label]
        return self.rng.choice(source)

    def fill(self, name: str) -> str:
        key = name.lower()
        if key in self.words:
            value = self.words[key]
        elif key in _WORDS:
            value = self.rng.choice(_WORDS[key])
        else:
            value = _NUMBERS[key](self.rng)
        return value[:1].upper() + value[1:] if name[:1].isupper() else value

    def render(self, template: str, lead: str = "") -> list[Segment]:
        """Fill ``template``; after a ``lead`` the sentence continues in lower case."""
        if lead:
            head = next((k for k in _LOWER_START if template.startswith(k)), None)
            if head:
                template = _LOWER_START[head] + template[len(head) :]
            elif template[:1] != "{" and not template[:2].isupper():
                template = template[:1].lower() + template[1:]
        segments: list[Segment] = [(lead, None)] if lead else []
        used: set[str] = set()
        pos = 0
        for match in _SLOT.finditer(template):
            if match.start() > pos:
                segments.append((template[pos : match.start()], None))
            name = match.group(1)
            label = {"D": DISEASE, "C": CHEMICAL}.get(name[:1]) if len(name) <= 2 else None
            text = self.pick(label) if label else self.fill(name)
            for _ in range(3):  # "X or X" reads badly; a sentence names an entity once
                if not label or text not in used:
                    break
                text = self.pick(label)
            used.add(text)
            if label and (name.endswith("c") or not segments):
                text = text[:1].upper() + text[1:]  # sentence-initial or list-item capital
            tags = match.group(2)
            segments.append((text, f"{label}|{tags}" if label and tags else label))
            pos = match.end()
        segments.append((template[pos:], None))
        return segments

    def template(self, block: str) -> str:
        """The next template of ``block``; each is used once before any repeats."""
        deck = self.decks.get(block)
        if not deck:
            deck = self.decks[block] = list(_lines(block))
            self.rng.shuffle(deck)
        return deck.pop()

    def sentences(self, block: str, k: int, leads: tuple[str, ...] = ()) -> list[list[Segment]]:
        """``k`` sentences from ``block``; with ``leads``, some start with one of them."""
        out = []
        for _ in range(k):
            lead = self.rng.choice(leads) if leads and self.rng.random() < 0.3 else ""
            out.append(self.render(self.template(block), lead))
        return out


def _with_tag(sentences: list[list[Segment]], tag: str) -> list[list[Segment]]:
    """``sentences`` with ``tag`` on every entity that has no tag of its axis yet."""
    axis = _TAGS[tag][0]

    def tagged(label: str) -> str:
        name, _, tags = label.partition("|")
        if any(_TAGS[t][0] == axis for t in tags.split("+") if t):
            return label
        return f"{name}|{tags + '+' if tags else ''}{tag}"

    return [[(t, tagged(lab) if lab else lab) for t, lab in sentence] for sentence in sentences]


def _distinct(items: list[list[Segment]]) -> list[list[Segment]]:
    """Drop list items whose first entity repeats an earlier item's (a list names each once)."""
    seen: set[str] = set()
    out = []
    for item in items:
        key = next((text.lower() for text, label in item if label), "")
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _n_words(sentence: list[Segment]) -> int:
    return len("".join(text for text, _ in sentence).split())


def _join(sections: list[tuple[str, list[list[Segment]], bool]], sep: str) -> list[Segment]:
    """Sections of (heading, sentences, numbered) into one segment list."""
    out: list[Segment] = []
    for i, (heading, sentences, numbered) in enumerate(sections):
        out.append(((sep if i else "") + (f"{heading}:" if heading else ""), None))
        for j, sentence in enumerate(sentences):
            lead = f"\n{j + 1}. " if numbered else (" " if heading or j else "")
            out.append((lead, None))
            out.extend(sentence)
    return out


def _note(w: _Writer, target_words: int) -> list[Segment]:
    rng, long_note = w.rng, target_words >= 700
    hpi = w.sentences(_OPENING, 1) + w.sentences(_HPI, rng.randint(2, 5), _NOTE_LEADS)
    sections = [("HISTORY OF PRESENT ILLNESS", hpi, False)]
    pmh = _distinct(w.sentences(_PMH, rng.randint(2, 6)))
    pmh = _with_tag(pmh, _SECTION_TAGS["PAST MEDICAL HISTORY"])
    sections.append(("PAST MEDICAL HISTORY", pmh, True))
    sections.append(("MEDICATIONS", _distinct(w.sentences(_MEDS, rng.randint(2, 9))), True))
    for heading, block in _OTHER.items():
        if long_note or rng.random() < 0.3:
            sentences = w.sentences(block, rng.randint(1, 3))
            if heading in _SECTION_TAGS:
                sentences = _with_tag(sentences, _SECTION_TAGS[heading])
            sections.append((heading, sentences, False))
    course: list[list[Segment]] = []
    if long_note:
        sections.append(("HOSPITAL COURSE", course, False))
    plan = w.sentences(_PLAN, rng.randint(2, 4))
    sections.append(("ASSESSMENT AND PLAN", plan, True))
    words = sum(_n_words(s) for _, sentences, _ in sections for s in sentences)
    while words < target_words:
        grow, block = rng.choices(
            ((course, _COURSE), (hpi, _HPI), (plan, _PLAN)), (7 * long_note, 2, 1)
        )[0]
        grow += w.sentences(block, 1, () if grow is plan else _NOTE_LEADS)
        words += _n_words(grow[-1])
    plan.append(w.render(_DISPOSITION))
    return _join(sections, "\n\n")


def _abstract(w: _Writer, target_words: int) -> list[Segment]:
    rng = w.rng
    title = w.render(w.template(_TITLE))
    sections = [("", [title], False)]
    sections += [(h, w.sentences(b, rng.randint(1, 2)), False) for h, b in _ABSTRACT.items()]
    words = sum(_n_words(s) for _, sentences, _ in sections for s in sentences)
    while words < target_words:
        heading, sentences, _ = sections[rng.choice((2, 3, 3))]
        sentences += w.sentences(_ABSTRACT[heading], 1, _ABSTRACT_LEADS)
        words += _n_words(sentences[-1])
    return _join(sections, " ")


def _assemble(doc_id: str, segments: list[Segment]) -> tuple[str, list[tuple]]:
    """Concatenate segments; record each entity's character offsets as it is appended."""
    parts: list[str] = []
    spans: list[tuple] = []
    pos = 0
    for text, label in segments:
        if label is not None:
            name, _, tags = label.partition("|")
            context = dict(context_lexicon.DEFAULTS)
            context.update(_TAGS[t] for t in tags.split("+") if t)
            spans.append((doc_id, pos, pos + len(text), text, name, *context.values()))
        parts.append(text)
        pos += len(text)
    full = "".join(parts)
    if not spans or any(full[s:e] != t for _, s, e, t, *_ in spans):
        raise AssertionError(f"sample document {doc_id}: gold spans do not match its text")
    return full, spans


LONG_NOTE_SHARE = 1 / 5


def generate_corpus(
    seed: int = 13, n_notes: int = 80, n_abstracts: int = 40
) -> tuple[pa.Table, pa.Table]:
    """The invented corpus for ``seed``: (docs, entities).

    docs: doc_id, text, source ("note" | "abstract"), split ("train" | "heldout").
    entities: doc_id, start, end (int32 character offsets, end exclusive), text, label,
    with ``text == docs.text[start:end]``, and the mention's gold context (negation,
    temporality, experiencer) as the templates and their sections say. Notes run ~150-350
    words, one in five ~600-1800; abstracts 150-350 words, a few longer. About a quarter of
    each source is heldout, and heldout documents also use lexicon entries that no train
    document contains.
    """
    rng = random.Random(seed)
    unseen = {
        lab: set(rng.sample(lex, round(len(lex) * UNSEEN_FRACTION)))
        for lab, lex in ((DISEASE, DISEASES), (CHEMICAL, CHEMICALS))
    }
    pools = {
        (split, source): {
            lab: tuple(
                x
                for x in lex
                if (split == "heldout" or x not in unseen[lab])
                and (source == "abstract" or x not in _RESEARCH_ONLY)
            )
            for lab, lex in ((DISEASE, DISEASES), (CHEMICAL, CHEMICALS))
        }
        for split in ("train", "heldout")
        for source in ("note", "abstract")
    }
    docs: dict[str, list[str]] = {schemas.DOC_ID: [], schemas.TEXT: [], SOURCE: [], SPLIT: []}
    spans: list[tuple] = []
    for source, prefix, n in (("note", "note", n_notes), ("abstract", "abs", n_abstracts)):
        order = list(range(n))
        rng.shuffle(order)
        heldout = set(order[: round(n * HELDOUT_FRACTION)])
        width = max(4, len(str(n)))
        for i in range(n):
            split = "heldout" if i in heldout else "train"
            w = _Writer(rng, pools[split, source], focus=5 if source == "note" else 3)
            if source == "note":
                # Few long notes: enough to exercise windowing, few enough that the
                # embedded default (NER + embeddings on 2 CPU cores) takes minutes.
                long_doc = rng.random() < LONG_NOTE_SHARE
                segments = _note(w, rng.randint(600, 1800) if long_doc else rng.randint(80, 330))
            else:
                long_doc = rng.random() < 0.08
                target = rng.randint(400, 650) if long_doc else rng.randint(150, 300)
                segments = _abstract(w, target)
            doc_id = f"{prefix}-{i + 1:0{width}d}"
            text, doc_spans = _assemble(doc_id, segments)
            for column, value in zip(docs, (doc_id, text, source, split), strict=True):
                docs[column].append(value)
            spans.extend(doc_spans)
    columns = list(zip(*spans, strict=True)) if spans else [[] for _ in GOLD_SCHEMA.names]
    entities = pa.Table.from_arrays([pa.array(c) for c in columns], names=GOLD_SCHEMA.names)
    return pa.Table.from_pydict(docs, schema=DOC_SCHEMA), entities.cast(GOLD_SCHEMA)


def write_sample_corpus(
    dest: str, seed: int = 13, n_shards: int = 4, n_notes: int = 80, n_abstracts: int = 40
) -> dict[str, str]:
    """Write the corpus under ``dest`` (any URI storage understands); return the URIs.

    ``docs/part-NNNNN.parquet`` holds all documents in ``n_shards`` contiguous shards; the
    ``train_*`` and ``heldout_*`` files hold each split's documents and gold entities.
    """
    if n_shards < 1:
        raise ValueError("n_shards must be at least 1")
    docs, entities = generate_corpus(seed, n_notes, n_abstracts)
    uris = {"docs": storage.join(dest, "docs")}
    per_shard = -(-docs.num_rows // n_shards)
    for k in range(n_shards):
        shard = docs.slice(k * per_shard, per_shard)
        shard_uri = storage.join(dest, "docs", f"part-{k:05d}.parquet")
        storage.write_parquet_table(shard_uri, shard, DOC_SCHEMA)
    for split in ("train", "heldout"):
        part = docs.filter(pc.equal(docs[SPLIT], split))
        ids = part[schemas.DOC_ID]
        gold = entities.filter(pc.is_in(entities[schemas.DOC_ID], value_set=ids))
        for kind, table, schema in (("docs", part, DOC_SCHEMA), ("entities", gold, GOLD_SCHEMA)):
            uris[f"{split}_{kind}"] = storage.join(dest, f"{split}_{kind}.parquet")
            storage.write_parquet_table(uris[f"{split}_{kind}"], table, schema)
    return uris
