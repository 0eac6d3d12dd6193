//! The live dashboard in the terminal (ratatui on crossterm).
//!
//! How it works: one thread blocks on the terminal's input and one (the command's) on the host's watch
//! connection; both send [`Update`]s into one channel, and the drawing loop sleeps on that channel. It draws when
//! an update arrives, and once a second for the uptimes and the log pane; with nothing happening it costs nothing
//! but that. Keys that act (`s`, `S`, `r`, `t`, `d`) run their [`Actions`] on a thread of their own, so the
//! dashboard keeps drawing while a restart waits; what they change comes back through the host's views.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use envctl_contracts::control::HostView;
use envctl_contracts::state::{ProcessKind, ServiceRecord, ServiceStatus};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row as TableRow, Table, TableState, Wrap};

use super::{Actions, Board, active_line, failure_line, glyph, word};

/// What the drawing loop hears about.
#[derive(Debug)]
pub enum Update {
    /// The host sent a view.
    View(Box<HostView>),
    /// The host's connection ended (with why).
    Gone(String),
    /// A key was pressed.
    Key(KeyEvent),
    /// The terminal was resized.
    Resize,
    /// An action finished: its message.
    Done(String),
    /// Doctor finished: its gates, or why it could not run.
    Doctor(Result<Vec<String>, String>),
}

/// How the dashboard looks.
#[derive(Debug, Clone)]
pub struct Options {
    /// The repository's name.
    pub title: String,
    /// Target → requirement → URL.
    pub requirements: BTreeMap<String, BTreeMap<String, String>>,
    /// Colours (off with `NO_COLOR` or `--no-color`).
    pub color: bool,
}

/// What the user sees besides the board.
#[derive(Debug, Default)]
struct Screen {
    view: Option<HostView>,
    selected: usize,
    log: bool,
    search: String,
    typing: bool,
    help: bool,
    doctor: Option<Vec<String>>,
    message: String,
    gone: bool,
}

/// Puts the terminal back however the dashboard ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
        let mut out = std::io::stdout();
        let _ = crossterm::execute!(out, crossterm::terminal::LeaveAlternateScreen, crossterm::cursor::Show);
        let _ = out.flush();
    }
}

/// Runs the dashboard until `q` or Ctrl-C. `updates` is the channel the command's watch thread feeds.
pub fn run(
    options: &Options,
    tx: &Sender<Update>,
    updates: &Receiver<Update>,
    actions: &Arc<dyn Actions>,
) -> std::io::Result<()> {
    crossterm::terminal::enable_raw_mode()?;
    let _restore = Restore;
    let mut out = std::io::stdout();
    crossterm::execute!(out, crossterm::terminal::EnterAlternateScreen, crossterm::cursor::Hide)?;
    let mut terminal = Terminal::new(CrosstermBackend::new(out))?;
    let input = tx.clone();
    std::thread::spawn(move || {
        loop {
            let update = match crossterm::event::read() {
                Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => Update::Key(key),
                Ok(Event::Resize(..)) => Update::Resize,
                Ok(_) => continue,
                Err(_) => return,
            };
            if input.send(update).is_err() {
                return;
            }
        }
    });
    let mut screen = Screen { log: true, ..Screen::default() };
    loop {
        let board = screen
            .view
            .as_ref()
            .map(|v| Board::new(&options.title, v, &options.requirements, SystemTime::now()));
        let log = match (&board, &screen.view) {
            (Some(b), Some(v)) if screen.log => {
                selected_record(b, v, screen.selected).map(|r| actions.log_tail(r, 200)).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        terminal.draw(|frame| draw(frame, options, &screen, board.as_ref(), &log))?;
        let update = match updates.recv_timeout(Duration::from_secs(1)) {
            Ok(update) => update,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        match update {
            Update::View(view) => {
                screen.view = Some(*view);
                screen.gone = false;
            }
            Update::Gone(why) => {
                screen.gone = true;
                screen.message = why;
            }
            Update::Resize => {}
            Update::Done(message) => screen.message = message,
            Update::Doctor(result) => {
                screen.doctor = Some(result.unwrap_or_else(|e| vec![format!("doctor could not run: {e}")]));
                screen.message.clear();
            }
            Update::Key(key) => {
                if !on_key(key, &mut screen, board.as_ref(), tx, actions) {
                    return Ok(());
                }
            }
        }
    }
}

/// The record of the selected row.
fn selected_record<'a>(board: &Board, view: &'a HostView, selected: usize) -> Option<&'a ServiceRecord> {
    let row = board.rows.get(selected)?;
    view.services.iter().find(|r| r.target == row.target && r.service == row.service && r.kind == row.kind)
}

/// Handles a key; false to quit.
fn on_key(
    key: KeyEvent,
    screen: &mut Screen,
    board: Option<&Board>,
    tx: &Sender<Update>,
    actions: &Arc<dyn Actions>,
) -> bool {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return false;
    }
    if screen.typing {
        match key.code {
            KeyCode::Enter => screen.typing = false,
            KeyCode::Esc => {
                screen.typing = false;
                screen.search.clear();
            }
            KeyCode::Backspace => {
                screen.search.pop();
            }
            KeyCode::Char(c) => screen.search.push(c),
            _ => {}
        }
        return true;
    }
    let rows = board.map_or(0, |b| b.rows.len());
    let selected = board.and_then(|b| b.rows.get(screen.selected)).cloned();
    match key.code {
        KeyCode::Char('q') => return false,
        KeyCode::Esc => {
            screen.help = false;
            screen.doctor = None;
            screen.search.clear();
        }
        KeyCode::Down | KeyCode::Char('j') if rows > 0 => {
            screen.selected = (screen.selected + 1).min(rows - 1);
        }
        KeyCode::Up | KeyCode::Char('k') => screen.selected = screen.selected.saturating_sub(1),
        KeyCode::Char('l') => screen.log = !screen.log,
        KeyCode::Char('/') => {
            screen.typing = true;
            screen.search.clear();
            screen.log = true;
        }
        KeyCode::Char('?') => screen.help = !screen.help,
        KeyCode::Char('d') if screen.doctor.take().is_none() => {
            screen.message = "running doctor…".into();
            let (tx, actions) = (tx.clone(), Arc::clone(actions));
            std::thread::spawn(move || {
                let _ = tx.send(Update::Doctor(actions.doctor()));
            });
        }
        KeyCode::Char(c @ ('s' | 'S' | 'r' | 't')) => {
            let Some(row) = selected else { return true };
            if row.kind == ProcessKind::Requirement {
                screen.message =
                    format!("{} is a requirement: it starts and stops with its target", row.service);
                return true;
            }
            let verb = match c {
                's' => "stopping",
                'S' => "starting",
                'r' => "restarting",
                _ => "testing",
            };
            screen.message = format!("{verb} {}/{}…", row.target, row.service);
            let (tx, actions) = (tx.clone(), Arc::clone(actions));
            std::thread::spawn(move || {
                let (t, s) = (row.target.as_str(), row.service.as_str());
                let done = match c {
                    's' => actions.stop(t, s),
                    'S' => actions.start(t, s),
                    'r' => actions.restart(t, s),
                    _ => actions.test(t, s),
                };
                let _ = tx.send(Update::Done(done.unwrap_or_else(|e| format!("error: {e}"))));
            });
        }
        _ => {}
    }
    true
}

fn status_style(status: ServiceStatus, color: bool) -> Style {
    if !color {
        return Style::default();
    }
    let c = match status {
        ServiceStatus::Ready => Color::Green,
        ServiceStatus::Starting | ServiceStatus::Restarting | ServiceStatus::Pending => Color::Yellow,
        ServiceStatus::Failed => Color::Red,
        ServiceStatus::Exited | ServiceStatus::Stopped => Color::DarkGray,
    };
    Style::default().fg(c)
}

fn draw(
    frame: &mut ratatui::Frame<'_>,
    options: &Options,
    screen: &Screen,
    board: Option<&Board>,
    log: &[String],
) {
    let area = frame.area();
    let reqs = board.map_or(0, |b| b.requirements.values().map(BTreeMap::len).sum::<usize>());
    let jobs = board.and_then(|b| b.jobs.as_ref()).map_or(1, |j| 1 + j.active.len() + j.failures.len());
    let rows = board.map_or(1, |b| b.rows.len().max(1));
    let lines = |n: usize| u16::try_from(n).unwrap_or(u16::MAX);
    let [header, table, req_area, jobs_area, log_area, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(lines(rows + 2).min(area.height / 2)),
        Constraint::Length(if reqs == 0 { 0 } else { lines(reqs + 1) }),
        Constraint::Length(lines(jobs + 1)),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let title = match board {
        Some(b) if screen.gone => {
            format!("envctl dashboard: {} (no host answers; run {})", b.title, b.run_id)
        }
        Some(b) => format!("envctl dashboard: {} ({}, run {})", b.title, b.host, b.run_id),
        None => format!("envctl dashboard: {} (waiting for the host…)", options.title),
    };
    frame.render_widget(Paragraph::new(Line::from(Span::styled(title, bold))), header);
    let Some(board) = board else { return };
    draw_services(frame, options, screen, board, table);
    if reqs > 0 {
        let text: Vec<Line<'_>> = board
            .requirements
            .iter()
            .flat_map(|(t, r)| r.iter().map(move |(n, u)| Line::raw(format!("{t:<12} {n:<12} {u}"))))
            .collect();
        let block = Block::default().borders(Borders::TOP).title(" requirements ");
        frame.render_widget(Paragraph::new(text).block(block), req_area);
    }
    draw_jobs(frame, options, board, jobs_area);
    if screen.log {
        draw_log(frame, screen, board, log, log_area);
    }
    let footer_text = if screen.typing {
        format!("/{}▏ (Enter keeps it, Esc clears)", screen.search)
    } else if screen.message.is_empty() {
        "↑↓/jk select  r restart  s stop  S start  t test  l log  / search  d doctor  ? help  q quit"
            .to_owned()
    } else {
        screen.message.clone()
    };
    frame.render_widget(Paragraph::new(footer_text), footer);
    if screen.help {
        popup(frame, area, " help ", &HELP.lines().map(str::to_owned).collect::<Vec<_>>());
    } else if let Some(gates) = &screen.doctor {
        popup(frame, area, " doctor (Esc closes) ", gates);
    }
}

fn draw_services(
    frame: &mut ratatui::Frame<'_>,
    options: &Options,
    screen: &Screen,
    board: &Board,
    area: Rect,
) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let head = ["TARGET", "SERVICE", "STATUS", "PORT", "URL", "PID", "UPTIME", "RESTARTS", "PROBE"];
    let lines: Vec<TableRow<'_>> = board
        .rows
        .iter()
        .map(|r| {
            let name = match r.kind {
                ProcessKind::Service => r.service.clone(),
                ProcessKind::Requirement => format!("{} (req)", r.service),
            };
            TableRow::new(vec![
                Span::raw(r.target.clone()),
                Span::raw(name),
                Span::styled(
                    format!("{} {}", glyph(r.status), word(r.status)),
                    status_style(r.status, options.color),
                ),
                Span::raw(r.port.clone()),
                Span::raw(r.url.clone()),
                Span::raw(r.pid.clone()),
                Span::raw(r.uptime.clone()),
                Span::raw(r.restarts.to_string()),
                // An ended service's reason says more than its last probe.
                Span::raw(r.failure.clone().unwrap_or_else(|| r.probe.clone())),
            ])
        })
        .collect();
    let widest = |cell: &dyn Fn(&super::Row) -> usize, min: usize, max: usize| {
        let widest = board.rows.iter().map(cell).max().unwrap_or(min).clamp(min, max);
        u16::try_from(widest).unwrap_or(u16::MAX)
    };
    let url_width = widest(&|r| r.url.chars().count(), 3, 40);
    let name_width = widest(
        &|r| r.service.chars().count() + if r.kind == ProcessKind::Requirement { 6 } else { 0 },
        7,
        28,
    );
    let widths = [
        Constraint::Length(widest(&|r| r.target.chars().count(), 6, 24)),
        Constraint::Length(name_width),
        Constraint::Length(12),
        Constraint::Length(6),
        // The URL gives way first when the terminal is narrow.
        Constraint::Max(url_width),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Min(14),
    ];
    let mut state =
        TableState::default().with_selected(Some(screen.selected.min(board.rows.len().saturating_sub(1))));
    let services = Table::new(lines, widths)
        .header(TableRow::new(head).style(bold))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .block(Block::default().borders(Borders::TOP).title(" services "));
    frame.render_stateful_widget(services, area, &mut state);
}

fn draw_jobs(frame: &mut ratatui::Frame<'_>, options: &Options, board: &Board, area: Rect) {
    let mut job_lines: Vec<Line<'_>> = Vec::new();
    match &board.jobs {
        None => job_lines.push(Line::raw("no job store open (the host opens it with the first start)")),
        Some(j) => {
            job_lines.push(Line::raw(format!(
                "{} running, {} queued, {} scheduled, {} failed, {} dead",
                j.running, j.queued, j.scheduled, j.failed, j.dead
            )));
            job_lines.extend(j.active.iter().map(|job| Line::raw(active_line(job))));
            let red = if options.color { Style::default().fg(Color::Red) } else { Style::default() };
            job_lines.extend(j.failures.iter().map(|job| Line::styled(failure_line(job), red)));
        }
    }
    let block = Block::default().borders(Borders::TOP).title(" jobs ");
    frame.render_widget(Paragraph::new(job_lines).block(block), area);
}

fn draw_log(frame: &mut ratatui::Frame<'_>, screen: &Screen, board: &Board, log: &[String], log_area: Rect) {
    {
        let name = board
            .rows
            .get(screen.selected)
            .map(|r| format!("{}/{}", r.target, r.service))
            .unwrap_or_default();
        let shown: Vec<Line<'_>> = log
            .iter()
            .filter(|l| screen.search.is_empty() || l.contains(&screen.search))
            .map(|l| Line::raw(super::super::strip_ansi(l)))
            .collect();
        let skip = shown.len().saturating_sub(usize::from(log_area.height.saturating_sub(1)));
        let search = if screen.search.is_empty() { String::new() } else { format!(" /{} ", screen.search) };
        let block = Block::default().borders(Borders::TOP).title(format!(" log {name} {search}"));
        frame.render_widget(
            Paragraph::new(shown.into_iter().skip(skip).collect::<Vec<_>>()).block(block),
            log_area,
        );
    }
}

const HELP: &str = "↑/↓ or j/k   select a service
r            restart the selected service
s / S        stop / start it
t            run its tests as jobs
l            show or hide its log
/            search its log (Enter keeps, Esc clears)
d            run doctor and show its gates
?            this help
q, Ctrl-C    quit (services keep running)";

fn popup(frame: &mut ratatui::Frame<'_>, area: Rect, title: &str, lines: &[String]) {
    let width = area.width.saturating_sub(8).min(90);
    let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX).min(area.height.saturating_sub(2));
    let rect =
        Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    frame.render_widget(Clear, rect);
    let text: Vec<Line<'_>> = lines.iter().map(|l| Line::raw(l.clone())).collect();
    let block = Block::default().borders(Borders::ALL).title(title.to_owned());
    frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }).block(block), rect);
}
