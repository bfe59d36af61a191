"""The forms engine: FHIR Questionnaires, decision rules as data, and their translations.

No Kivy here: the screens in ``field_app.ui`` drive a FormState and render what it says.
"""

from field_app.forms.library import PACKAGED_CONTENT, Form, FormLibrary
from field_app.forms.questionnaire import Coding, Item, Quantity, Questionnaire
from field_app.forms.rules import Conclusions, PlannedTask, Rule, RuleSet
from field_app.forms.state import CompletedForm, FormState

__all__ = [
    "PACKAGED_CONTENT",
    "Coding",
    "CompletedForm",
    "Conclusions",
    "Form",
    "FormLibrary",
    "FormState",
    "Item",
    "PlannedTask",
    "Quantity",
    "Questionnaire",
    "Rule",
    "RuleSet",
]
