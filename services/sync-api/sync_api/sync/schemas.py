"""The answers of ``/api/sync-runs`` and the admin page's progress (validation and the document)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sync_api.web.schemas import Page


class StartRun(BaseModel):
    """A run takes no options; an empty body, or an empty JSON object, starts one."""

    model_config = ConfigDict(extra="ignore")


class RunStarted(BaseModel):
    id: int
    total: int = Field(description="students in the run, one job each on queue sync-pembayaran")
    status: str = Field(description="``running``")


class SyncRun(BaseModel):
    id: int
    status: str = Field(description="running, finished or cancelled")
    total: int
    processed: int = Field(description="students that reached an outcome (success or failure), each once")
    failed: int
    successCount: int
    percent: float = Field(description="processed / total x 100, two decimals")
    isRunning: bool
    started_at: str | None
    finished_at: str | None


class SyncRuns(Page[SyncRun]):
    """Runs, newest first."""


class RunResumed(BaseModel):
    id: int
    status: str = Field(description="``running``")
    pending: int = Field(description="students without an outcome yet, whose jobs are sent again")


class Progress(BaseModel):
    """The latest run in the shape the old admin page polls (zeros when there is none)."""

    id: int | None = None
    total: int
    processed: int
    failed: int
    percent: float
    isRunning: bool
    successCount: int


class StudentFailure(BaseModel):
    idperson: int
    name: str | None
    error: str | None = Field(description="the last error")
    failed_at: str | None


class RunFailures(Page[StudentFailure]):
    run_id: int | None = Field(None, description="the run (admin page only)")
