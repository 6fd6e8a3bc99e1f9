"""Model configuration: Student and TA widths along the three nesting axes (paper section 3.2).

Width selection is data here and an argument of `forward` / extraction, never global state.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
    """Architecture of the shared-embedding MatTA model.

    Args:
        d_student: d_model of the Student (it reads the first `d_student` dims of each pooled
            embedding and dense token).
        d_ta: d_model of the TA = the embedding tables' dim.
        gau_blocks: nested GAU blocks run by both towers.
        gau_expansion_student: GAU expansion dim `e` of the Student.
        gau_expansion_ta: GAU expansion dim `e` of the TA.
        gau_shared_student: GAU shared (query/key) dim `s` of the Student.
        gau_shared_ta: GAU shared dim `s` of the TA.
        ta_extra_gau_blocks: GAU blocks only the TA runs (depth nesting).
        mlp_student: hidden widths of the Student MLP head.
        mlp_ta: hidden widths of the TA MLP head (same length; each >= the Student's).
        ta_extra_mlp_blocks: residual MLP blocks at the TA's last hidden width that only the TA
            runs (depth nesting).
        share_params: M-nesting on (Student weights are slices of TA weights). Off gives
            separate Student and TA weights (paper Table 4 ablation).
        pooling: pooling of multi-valued embedding bags.
        ta_init: fan-in of the nested (shared) dense weights, N(0, gain^2 / fan_in): `ta_fan`
            (default) M_TA: the TA starts as a standalone TA would, the Student block smaller;
            `nested` sqrt(M_S M_TA) (the earlier default: the TA starts 1.2-1.4x per layer above
            a standalone TA, which costs the TA inside MatTA its lead; docs/results.md);
            `student_fan` M_S (the Student starts as a standalone Student). A separate (unshared)
            TA tower follows it too; the Student's does not.
    """

    model_config = ConfigDict(extra="forbid")

    d_student: int = Field(16, gt=0)
    d_ta: int = Field(32, gt=0)
    gau_blocks: int = Field(1, ge=0)
    gau_expansion_student: int = Field(32, gt=0)
    gau_expansion_ta: int = Field(128, gt=0)
    gau_shared_student: int = Field(16, gt=0)
    gau_shared_ta: int = Field(32, gt=0)
    ta_extra_gau_blocks: int = Field(0, ge=0)
    mlp_student: list[int] = Field(default_factory=lambda: [128, 32])
    mlp_ta: list[int] = Field(default_factory=lambda: [512, 128])
    ta_extra_mlp_blocks: int = Field(1, ge=0)
    share_params: bool = True
    pooling: Literal["sum", "mean"] = "mean"
    ta_init: Literal["nested", "ta_fan", "student_fan"] = "ta_fan"

    @model_validator(mode="after")
    def _nested(self) -> "ModelConfig":
        if self.d_student > self.d_ta:
            raise ValueError(f"d_student {self.d_student} > d_ta {self.d_ta}")
        if self.gau_expansion_student > self.gau_expansion_ta:
            raise ValueError("gau_expansion_student > gau_expansion_ta")
        if self.gau_shared_student > self.gau_shared_ta:
            raise ValueError("gau_shared_student > gau_shared_ta")
        if len(self.mlp_student) != len(self.mlp_ta):
            raise ValueError(f"mlp_student {self.mlp_student} and mlp_ta {self.mlp_ta} differ in length")
        if any(s > t for s, t in zip(self.mlp_student, self.mlp_ta)):
            raise ValueError(f"mlp_student {self.mlp_student} wider than mlp_ta {self.mlp_ta}")
        return self
