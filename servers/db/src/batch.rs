//! Batches: steps run in order in one transaction, each step optionally conditional on the
//! outcome of earlier ones; the same logic on every backend.

use super::error::DbError;
use super::page::Limit;
use protocol::proto::{
    batch_condition, step_outcome, Batch, BatchCondition, BatchResult, ErrorCode, Statement,
    StatementResult, StepOutcome,
};

fn holds(cond: &BatchCondition, outcomes: &[StepOutcome], here: usize) -> Result<bool, DbError> {
    let step = |i: u32| -> Result<&StepOutcome, DbError> {
        let i = i as usize;
        if i >= here {
            return Err(DbError::new(
                ErrorCode::BadRequest,
                format!("step {here}'s condition names step {i}, which does not come before it"),
            ));
        }
        Ok(&outcomes[i])
    };
    Ok(match &cond.cond {
        None => true,
        Some(batch_condition::Cond::Ok(i)) => {
            matches!(step(*i)?.outcome, Some(step_outcome::Outcome::Ok(_)))
        }
        Some(batch_condition::Cond::Error(i)) => {
            matches!(step(*i)?.outcome, Some(step_outcome::Outcome::Error(_)))
        }
        Some(batch_condition::Cond::Not(c)) => !holds(c, outcomes, here)?,
        Some(batch_condition::Cond::And(l)) => {
            let mut all = true;
            for c in &l.conds {
                all &= holds(c, outcomes, here)?;
            }
            all
        }
        Some(batch_condition::Cond::Or(l)) => {
            let mut any = false;
            for c in &l.conds {
                any |= holds(c, outcomes, here)?;
            }
            any
        }
    })
}

/// Runs a batch's steps in order through `exec(statement, limit, may_fail)`, inside a
/// transaction the caller opened. Returns the outcomes, or the error of the first step whose
/// failure rolls the batch back.
pub fn run(
    batch: &Batch,
    limit: Limit,
    mut exec: impl FnMut(&Statement, Limit, bool) -> Result<StatementResult, DbError>,
) -> Result<BatchResult, DbError> {
    let mut outcomes: Vec<StepOutcome> = Vec::with_capacity(batch.steps.len());
    let mut budget = limit;
    for (i, step) in batch.steps.iter().enumerate() {
        let run = match &step.condition {
            Some(c) => holds(c, &outcomes, i)?,
            None => true,
        };
        let outcome = if !run {
            step_outcome::Outcome::Skipped(true)
        } else {
            let stmt = step.stmt.clone().unwrap_or_default();
            match exec(&stmt, budget, step.may_fail) {
                Ok(r) => {
                    budget.max_bytes = budget.max_bytes.saturating_sub(r.rows.len() * 16);
                    step_outcome::Outcome::Ok(r)
                }
                Err(e) if step.may_fail => step_outcome::Outcome::Error(protocol::proto::Error {
                    code: e.code as i32,
                    message: e.message,
                    retryable: e.code.retryable(),
                }),
                Err(e) => {
                    return Err(DbError::new(
                        e.code,
                        format!("batch step {i} failed: {}", e.message),
                    ));
                }
            }
        };
        outcomes.push(StepOutcome {
            outcome: Some(outcome),
        });
    }
    Ok(BatchResult { steps: outcomes })
}
